//! Reading IMAP responses byte-exactly, for the tests' raw IMAP clients: lines and the
//! literals (`{n}` then n bytes) they announce.

use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// One line as sent (CRLF kept) and, when it ends announcing a literal, the literal's
/// bytes; what follows the literal is left unread. Fails on a closed connection or
/// after 20 seconds of silence.
pub async fn line_and_literal<R: AsyncBufRead + Unpin>(io: &mut R) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut line = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), io.read_until(b'\n', &mut line))
        .await
        .expect("the server answers")
        .unwrap();
    assert!(n > 0, "connection closed");
    let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
    if let Some(open) = trimmed.iter().rposition(|&b| b == b'{')
        && trimmed.last() == Some(&b'}')
        && let Ok(len) = std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1])
            .unwrap_or("x")
            .parse::<usize>()
    {
        let mut lit = vec![0u8; len];
        io.read_exact(&mut lit).await.unwrap();
        return (line, Some(lit));
    }
    (line, None)
}

/// One whole response line, with any literals it announces read into it.
pub async fn response_line<R: AsyncBufRead + Unpin>(io: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let (line, literal) = line_and_literal(io).await;
        out.extend_from_slice(&line);
        match literal {
            Some(lit) => out.extend_from_slice(&lit),
            None => return out,
        }
    }
}
