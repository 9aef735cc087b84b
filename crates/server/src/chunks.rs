//! The CRI's streaming lists (StreamPodSandboxes, StreamContainers,
//! StreamImages and the stats ones): the same items as the unary list, in
//! messages of at most [`CHUNK_BYTES`] each, so that a large node never
//! meets the 16 MiB message limit. An empty list is a stream without
//! messages.

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

/// A server stream of `T`.
pub type ListStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The most bytes of items in one message (an item larger than this goes
/// alone).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Groups `items` into messages of at most [`CHUNK_BYTES`], in order.
pub fn split<T: prost::Message>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        // Its size inside the message: tag, length and body.
        let len = item.encoded_len() + 8;
        if !current.is_empty() && bytes + len > CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// `items` as a stream of messages made by `wrap`.
pub fn stream<T, R>(items: Vec<T>, wrap: fn(Vec<T>) -> R) -> ListStream<R>
where
    T: prost::Message,
    R: Send + 'static,
{
    let messages: Vec<Result<R, Status>> = split(items).into_iter().map(|c| Ok(wrap(c))).collect();
    Box::pin(futures::stream::iter(messages))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cri::runtime::v1 as cri;

    fn pod(name_len: usize) -> cri::PodSandbox {
        cri::PodSandbox {
            id: "x".repeat(name_len),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_stay_under_the_limit_and_keep_order() {
        let items: Vec<_> = (0..3000).map(|i| pod(1000 + i % 7)).collect();
        let ids: Vec<String> = items.iter().map(|p| p.id.clone()).collect();
        let chunks = split(items);
        assert!(chunks.len() > 1);
        for c in &chunks {
            let msg = cri::StreamPodSandboxesResponse {
                pod_sandboxes: c.clone(),
            };
            assert!(prost::Message::encoded_len(&msg) <= CHUNK_BYTES);
        }
        let back: Vec<String> = chunks.into_iter().flatten().map(|p| p.id).collect();
        assert_eq!(back, ids);
    }

    #[test]
    fn an_oversized_item_goes_alone_and_nothing_is_empty() {
        let chunks = split(vec![pod(10), pod(CHUNK_BYTES + 1), pod(10)]);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(split(Vec::<cri::PodSandbox>::new()).is_empty());
    }
}
