use super::*;
use rand::{Rng, SeedableRng};

/// Allows nothing: globals are refused, persistent ids too.
struct Nothing;

impl Policy for Nothing {
    fn global(&self, _: &str, _: &str) -> Option<Global> {
        None
    }
    fn persistent(&mut self, _: &Value, at: usize) -> Result<Value, PickleError> {
        Err(bad(at, "BINPERSID", "no persistent ids here"))
    }
}

/// `{'a': [1, -2, 3.5, 'x', b'yz', None, True], 'b': (300, 70000, 2**70)}` at protocol 2
/// (by hand), with a memoized list fetched twice.
fn sample() -> Vec<u8> {
    let mut b = vec![0x80, 2, b'}', b'q', 0, b'('];
    b.extend([0x8c, 1, b'a']); // SHORT_BINUNICODE 'a'
    b.extend([b']', b'q', 1, b'(', b'K', 1, b'J']);
    b.extend((-2i32).to_le_bytes());
    b.push(b'G');
    b.extend(3.5f64.to_be_bytes());
    b.extend([
        b'X', 1, 0, 0, 0, b'x', b'C', 2, b'y', b'z', b'N', 0x88, b'e',
    ]);
    b.extend([0x8c, 1, b'b', b'M']);
    b.extend(300u16.to_le_bytes());
    b.push(b'J');
    b.extend(70000i32.to_le_bytes());
    let big: i128 = 1 << 70;
    b.extend([0x8a, 9]);
    b.extend(&big.to_le_bytes()[..9]);
    b.extend([0x87, b'u']); // TUPLE3, SETITEMS
    b.extend([0x8c, 1, b'c', b'h', 1, b'h', 1, 0x86, b's', b'.']);
    b
}

#[test]
fn reads_numbers_strings_containers_and_memo() {
    let (v, used) = load(&sample(), &mut Nothing).unwrap();
    assert_eq!(used, sample().len());
    let a = v.get("a").unwrap().items().unwrap();
    assert_eq!(a[0].as_int(), Some(1));
    assert_eq!(a[1].as_int(), Some(-2));
    assert!(matches!(a[2], Value::Float(f) if f == 3.5));
    assert_eq!(a[3].as_str(), Some("x"));
    assert!(matches!(&a[4], Value::Bytes(b) if &b[..] == b"yz"));
    assert!(matches!(a[5], Value::None));
    assert!(matches!(a[6], Value::Bool(true)));
    let b = v.get("b").unwrap().items().unwrap();
    assert_eq!(b[0].as_int(), Some(300));
    assert_eq!(b[1].as_int(), Some(70000));
    assert_eq!(b[2].as_int(), Some(1 << 70));
    // the memoized list is shared, not copied
    let c = v.get("c").unwrap().items().unwrap();
    match (&c[0], &c[1]) {
        (Value::List(x), Value::List(y)) => assert!(Rc::ptr_eq(x, y)),
        _ => panic!("expected lists"),
    }
}

#[test]
fn forbidden_global_is_named_and_nothing_runs() {
    let p = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.";
    let e = load(p, &mut Nothing).unwrap_err().to_string();
    assert!(
        e.contains("`os.system`") && e.contains("not allowed"),
        "{e}"
    );
    // the same through STACK_GLOBAL (protocol 4)
    let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
    let e = load(p, &mut Nothing).unwrap_err().to_string();
    assert!(e.contains("`builtins.eval`"), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let s = sample();
    for n in 0..s.len() {
        assert!(load(&s[..n], &mut Nothing).is_err(), "prefix of {n} bytes");
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let s = sample();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    for _ in 0..5000 {
        let mut c = s.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..c.len());
            c[i] = rng.random();
        }
        let _ = load(&c, &mut Nothing);
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // BINUNICODE8 / BINBYTES8 claiming 2^62 bytes, LONG4 claiming 4 GiB
    for p in [
        &b"\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x40abc"[..],
        &b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xffabc"[..],
        &b"\x80\x02\x8b\xff\xff\xff\xffabc"[..],
    ] {
        assert!(matches!(
            load(p, &mut Nothing),
            Err(PickleError::Truncated { .. })
        ));
    }
}

#[test]
fn deep_nesting_drops_without_overflow() {
    let n = 1_000_000;
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', n));
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    let (v, _) = load(&p, &mut Nothing).unwrap();
    drop(v);
}

#[test]
fn stack_and_mark_underflow_are_errors() {
    for p in [
        &b"\x80\x02."[..],
        b"\x80\x02a.",
        b"\x80\x02e.",
        b"\x80\x02(0.",
        b"\x80\x02h\x05.",
        b"\x80\x02K\x01\x86.",
    ] {
        assert!(load(p, &mut Nothing).is_err(), "{p:?}");
    }
}
