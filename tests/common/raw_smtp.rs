//! A line-oriented SMTP client for what lettre will not send or will not show: exact
//! replies, multi-line answers, bytes a well-behaved client never writes.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Raw<S> {
    pub io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// The next reply: (code, all its lines joined by newlines).
    pub async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.io.read_line(&mut line),
            )
            .await
            .expect("a reply in time")
            .unwrap();
            assert!(n > 0, "connection closed; so far: {text}");
            text.push_str(line.trim_end());
            text.push('\n');
            if line.as_bytes().get(3) == Some(&b' ') {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }
    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
    pub async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.io.read_line(&mut line)
            )
            .await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

pub async fn raw(port: u16) -> Raw<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut r = Raw {
        io: BufReader::new(tcp),
    };
    assert_eq!(r.reply().await.0, 220);
    r
}
