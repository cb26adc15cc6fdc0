//! The one way a connection is refused: the answer goes out, our side closes, and what the
//! client still sends is read and dropped for a moment, so that the client reads the answer
//! rather than a reset (a close with unread bytes makes the kernel send RST, and the client
//! may lose the answer it has not read yet). Which bytes the answer is, is the protocol's.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::stats::Stats;
use crate::transport::Transport;

/// What a closing connection reads and throws away so the client sees the answer, not a reset.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Sends `answer` (a client that takes nothing for `wait` is cut off), then closes as
/// [`linger`] does. Returns whether the answer went out.
pub(crate) async fn refuse<S: Transport>(
    stream: &mut S,
    answer: &[u8],
    wait: Duration,
    stats: &Stats,
) -> bool {
    let sent = send(stream, answer, wait, stats).await;
    if sent {
        linger(stream).await;
    }
    sent
}

/// Writes all of `answer`, counting what was written (or the socket's failure).
async fn send<S: Transport>(
    stream: &mut S,
    mut answer: &[u8],
    wait: Duration,
    stats: &Stats,
) -> bool {
    while !answer.is_empty() {
        match timeout(wait, stream.write(answer)).await {
            Ok(Ok(n)) if n > 0 => {
                stats.add_written(n);
                answer = &answer[n..];
            }
            _ => {
                stats.add_socket_error();
                return false;
            }
        }
    }
    // A TLS stream may hold records it could not write yet.
    if stream.buffers_writes() && !matches!(timeout(wait, stream.flush()).await, Ok(Ok(()))) {
        stats.add_socket_error();
        return false;
    }
    true
}

/// Closes the way a client can still read what was sent: FIN first, then read and drop what
/// the client still sends, for a bounded time and size.
pub(crate) async fn linger<S: Transport>(stream: &mut S) {
    let _ = timeout(LINGER_TIME, stream.shutdown()).await;
    // On the heap: inline, it made every request's boxed state 4 KiB larger.
    let mut scratch = vec![0u8; 4096];
    let mut total = 0;
    let _ = timeout(LINGER_TIME, async {
        while total < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
