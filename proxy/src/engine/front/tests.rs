//! The framer byte by byte: every stream is fed whole, one byte at a time, and split at
//! every position, and must come out the same.

use std::time::Instant;

use super::framer::{Arrived, Framer, Refusal};
use super::{MAX_HEADERS, MAX_HEAD_BYTES};

/// What feeding `parts` in order gives: the bytes handed on, the heads, or the refusal.
fn feed_parts(parts: &[&[u8]]) -> (Vec<u8>, Vec<Arrived>, Option<Refusal>, bool) {
    let mut framer = Framer::new();
    let now = Instant::now();
    let mut passed = Vec::new();
    let mut heads = Vec::new();
    for part in parts {
        let mut out = Vec::new();
        match framer.feed(part, now, &mut out) {
            Ok(more) => {
                passed.extend(out);
                heads.extend(more);
            }
            Err(refusal) => return (passed, heads, Some(refusal), framer.stopped()),
        }
    }
    (passed, heads, None, framer.stopped())
}

/// Fed whole, byte by byte and split in two everywhere: the same bytes handed on, the
/// same refusal (`body_ended_empty` depends on the split, so it is compared fed whole).
fn check_every_split(data: &[u8]) -> (Vec<u8>, Vec<Arrived>, Option<Refusal>) {
    let (whole, heads, refused, _) = feed_parts(&[data]);
    let strip = |heads: &[Arrived]| {
        heads
            .iter()
            .map(|a| Arrived {
                body_ended_empty: false,
                ..*a
            })
            .collect::<Vec<_>>()
    };
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    let (one, one_heads, one_refused, _) = feed_parts(&bytes);
    assert_eq!(one_refused, refused, "byte by byte");
    if refused.is_none() {
        assert_eq!(one, whole, "byte by byte");
        assert_eq!(strip(&one_heads), strip(&heads));
    }
    for at in 0..=data.len() {
        let (a, b) = data.split_at(at);
        let (split, split_heads, split_refused, _) = feed_parts(&[a, b]);
        assert_eq!(split_refused, refused, "split at {at}");
        if refused.is_none() {
            assert_eq!(split, whole, "split at {at}");
            assert_eq!(strip(&split_heads), strip(&heads), "split at {at}");
        }
    }
    (whole, heads, refused)
}

fn refused(data: &[u8]) -> Refusal {
    check_every_split(data).2.expect("refused")
}

#[test]
fn well_formed_pipelined_requests_pass_whole_and_in_order() {
    let data: &[u8] = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
        POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n\
        GET /4 HTTP/1.0\r\n\r\n";
    let (passed, heads, refusal) = check_every_split(data);
    assert_eq!(refusal, None);
    assert_eq!(passed, data);
    assert_eq!(heads.len(), 4);
    assert!(heads[3].http10 && !heads[0].http10);
    assert!(!heads[2].body_ended_empty);
}

#[test]
fn a_head_is_held_back_until_whole() {
    let (passed, heads, refusal, _) = feed_parts(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]);
    assert!(passed.is_empty() && heads.is_empty() && refusal.is_none());
}

#[test]
fn empty_lines_before_a_request_are_skipped() {
    let (passed, heads, refusal) = check_every_split(b"\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(refusal, None);
    assert_eq!(passed, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(heads.len(), 1);
}

#[test]
fn a_chunked_body_ended_empty_with_its_head_is_told() {
    let data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (_, heads, _, _) = feed_parts(&[data]);
    assert!(heads[0].body_ended_empty);
    let (head, body) = data.split_at(data.len() - 5);
    let (_, heads, _, _) = feed_parts(&[head, body]);
    assert!(!heads[0].body_ended_empty, "the body came after the head");
    let (_, heads, _, _) =
        feed_parts(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"]);
    assert!(!heads[0].body_ended_empty, "not empty");
}

#[test]
fn smuggling_and_malformed_heads_are_refused_with_400() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nName : x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ];
    for case in cases {
        let refusal = refused(case);
        assert_eq!(
            (refusal.status, refusal.code),
            (400, "bad-request"),
            "{}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn bad_chunk_framing_is_refused_with_400() {
    let head: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        &b"zz\r\nhello\r\n"[..],
        b"\r\n",
        b" 5\r\nhello\r\n",
        b"5\nhello\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\r\r",
        b"0\r\n\n",
        b"0\r\nT: v\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"10000000000000000\r\n",
    ] {
        let data = [head, body].concat();
        let refusal = refused(&data);
        assert_eq!(refusal.status, 400, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_head_over_the_limits_is_431() {
    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
    let (_, _, refusal, _) = feed_parts(&[&big]);
    assert_eq!(refusal.unwrap().code, "header-too-large");
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend(format!("X-H{i}: v\r\n").bytes());
    }
    many.extend(b"\r\n");
    let refusal = refused(&many);
    assert_eq!((refusal.status, refusal.code), (431, "too-many-headers"));
}

#[test]
fn nothing_is_read_after_an_upgrade_request() {
    let data: &[u8] =
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nnot http at all";
    let (passed, heads, refusal, stopped) = feed_parts(&[data]);
    assert_eq!(refusal, None);
    assert!(stopped && heads[0].upgrade);
    assert!(passed.ends_with(b"\r\n\r\n"));
    let (_, heads, _, stopped) = feed_parts(&[b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"]);
    assert!(stopped && heads[0].upgrade);
}

#[test]
fn a_head_times_from_its_first_byte_only() {
    let mut framer = Framer::new();
    let now = Instant::now();
    let mut out = Vec::new();
    framer
        .feed(b"GET / HTTP/1.1\r\n\r\n", now, &mut out)
        .unwrap();
    assert_eq!(framer.head_since(), None, "idle between requests");
    let later = now + std::time::Duration::from_secs(30);
    framer.feed(b"GET", later, &mut out).unwrap();
    assert_eq!(framer.head_since(), Some(later));
}

#[test]
fn the_refusal_answer_is_the_pythons() {
    let answer = String::from_utf8(Refusal::head_timeout().answer()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    assert!(answer.contains("\r\nx-devmesh-error: header-timeout\r\n"));
    assert!(answer.contains("\r\nConnection: close\r\n"));
    assert!(answer.ends_with("\r\n\r\nthe request's headers did not arrive within 10s\n"));
}

mod io {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::{Arrivals, Front};

    #[tokio::test]
    async fn a_refused_request_is_answered_by_the_front_and_hyper_reads_none_of_it() {
        let (mut caller, sidecar) = tokio::io::duplex(1 << 16);
        let arrivals = Arc::new(Arrivals::default());
        let mut front = Front::new(sidecar, arrivals.clone());
        caller
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\nHost: a\n\n")
            .await
            .unwrap();
        let mut read = Vec::new();
        let err = front.read_to_end(&mut read).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            read.is_empty(),
            "nothing of the read with the refusal went on"
        );
        let mut answer = Vec::new();
        caller.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("x-devmesh-error: bad-request\r\n"));
    }

    #[tokio::test]
    async fn an_http_1_0_caller_is_answered_with_an_http_1_1_status_line() {
        let (mut caller, sidecar) = tokio::io::duplex(1 << 16);
        let arrivals = Arc::new(Arrivals::default());
        let mut front = Front::new(sidecar, arrivals.clone());
        caller.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut head = [0u8; 18];
        front.read_exact(&mut head).await.unwrap();
        assert!(arrivals.next().0.http10);
        front
            .write_all(b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.0 body")
            .await
            .unwrap();
        drop(front);
        let mut answer = Vec::new();
        caller.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.0 body");
    }
}
