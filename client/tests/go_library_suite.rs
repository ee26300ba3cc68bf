//! The Go library's test suite (bsm/redis-lock `lock_test.go`), run through both
//! the sync and the async locker against a real redis-server with the module.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redis::Commands;
use redis_fenced_lock::{CancelHandle, Error, Options, TOKEN_LEN};
use testkit::{Config, Server};

const KEY: &str = "__redis_lock_unit_test__";

fn normalizes_options<F: Flavor>() {
    let server = Server::start();
    let locker = F::new(
        &server,
        KEY,
        Options {
            lock_timeout: Duration::ZERO,
            retry_count: 0,
            retry_delay: Duration::ZERO,
            ..Options::default()
        },
    );
    let o = locker.options();
    assert_eq!(o.lock_timeout, Duration::from_secs(5));
    assert_eq!(o.retry_count, 0);
    assert_eq!(o.retry_delay, Duration::from_millis(100));
    assert_eq!(o.token_prefix, "");
    assert_eq!(o, Options::default());
}

fn obtain_fails_when_held<F: Flavor>() {
    let server = Server::start();
    let mut holder = F::new(&server, KEY, go_library_options());
    assert!(holder.lock().unwrap());
    match F::obtain(&server, KEY, Options::default()) {
        Err(e @ Error::NotObtained) => assert_eq!(e.to_string(), "lock not obtained"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("obtained a held lock"),
    }
    holder.unlock().unwrap();
}

fn obtains_through_shortcut<F: Flavor>() {
    let server = Server::start();
    let mut locker = F::obtain(&server, KEY, Options::default()).unwrap();
    assert!(locker.is_locked());
    locker.unlock().unwrap();
}

fn obtains_fresh_locks<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(!locker.is_locked());
    assert!(locker.lock().unwrap());
    assert!(locker.is_locked());

    let prefix = locker.options().token_prefix;
    let token = locker.token().unwrap();
    assert_eq!(token.len(), TOKEN_LEN + prefix.len());
    assert_eq!(&token[..prefix.len()], prefix);
    assert!(
        check(&mut conn, KEY, &token) > 0,
        "the server holds our token"
    );
    assert_near(pttl(&mut conn, KEY), 1000, 60, "fresh lock TTL");
    assert!(locker.fence().unwrap() >= 1);
}

fn retries_if_enabled<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let _: () = conn.set(KEY, "ABCD").unwrap();
    let _: () = conn.pexpire(KEY, 30).unwrap();

    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(locker.lock().unwrap());
    assert!(locker.is_locked());
    let token = locker.token().unwrap();
    assert!(check(&mut conn, KEY, &token) > 0);
    let prefix = locker.options().token_prefix;
    assert_eq!(&token[..token.len() - TOKEN_LEN], prefix);
    assert_near(pttl(&mut conn, KEY), 1000, 60, "TTL after retry");
}

fn does_not_retry_if_disabled<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let _: () = conn.set(KEY, "ABCD").unwrap();
    let _: () = conn.pexpire(KEY, 1000).unwrap();

    let options = Options {
        retry_count: 0,
        ..go_library_options()
    };
    let mut locker = F::new(&server, KEY, options);
    let start = Instant::now();
    assert!(!locker.lock().unwrap());
    let elapsed = start.elapsed().as_millis() as i64;
    assert!(!locker.is_locked());
    let v: String = conn.get(KEY).unwrap();
    assert_eq!(v, "ABCD");
    // Untouched: it only ran down while we tried once.
    assert_near(pttl(&mut conn, KEY), 1000 - elapsed, 60, "holder's TTL");
}

fn gives_up_when_retry_count_reached<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let _: () = conn.set(KEY, "ABCD").unwrap();
    let _: () = conn.pexpire(KEY, 1000).unwrap();

    let mut locker = F::new(&server, KEY, go_library_options());
    let start = Instant::now();
    assert!(!locker.lock().unwrap());
    let elapsed = start.elapsed().as_millis() as i64;
    assert!(
        elapsed >= 90,
        "gave up after {elapsed} ms, before the 4 × 25 ms retries"
    );
    assert!(!locker.is_locked());
    assert_eq!(locker.token(), None);
    let v: String = conn.get(KEY).unwrap();
    assert_eq!(v, "ABCD");
    assert_near(pttl(&mut conn, KEY), 1000 - elapsed, 60, "holder's TTL");
}

fn releases_own_locks<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(locker.lock().unwrap());
    assert!(locker.is_locked());

    locker.unlock().unwrap();
    assert_eq!(locker.token(), None);
    assert!(!locker.is_locked());
    let exists: bool = conn.exists(KEY).unwrap();
    assert!(!exists);
}

fn fails_to_release_expired_lock<F: Flavor>() {
    let server = Server::start();
    let options = Options {
        lock_timeout: Duration::from_millis(100),
        ..go_library_options()
    };
    let mut locker = F::new(&server, KEY, options);
    assert!(locker.lock().unwrap());
    thread::sleep(Duration::from_millis(250));
    assert!(matches!(locker.unlock(), Err(Error::UnlockFailed)));
    assert!(!locker.is_locked());
}

fn does_not_release_someone_elses_locks<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let _: () = conn.set(KEY, "ABCD").unwrap();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(!locker.is_locked());

    let err = locker.unlock().unwrap_err();
    assert!(matches!(err, Error::UnlockFailed));
    assert_eq!(err.to_string(), "lock unlock failed");
    assert_eq!(locker.token(), None);
    assert!(!locker.is_locked());
    let v: String = conn.get(KEY).unwrap();
    assert_eq!(v, "ABCD");

    // Ours, then taken over: the unlock leaves the new value alone.
    let _: () = conn.del(KEY).unwrap();
    assert!(locker.lock().unwrap());
    let _: () = conn.set(KEY, "EFGH").unwrap();
    assert!(matches!(locker.unlock(), Err(Error::UnlockFailed)));
    assert!(!locker.is_locked());
    let v: String = conn.get(KEY).unwrap();
    assert_eq!(v, "EFGH");
}

fn refreshes_locks<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(locker.lock().unwrap());
    let (token, fence) = (locker.token(), locker.fence());

    thread::sleep(Duration::from_millis(200));
    let ttl = pttl(&mut conn, KEY);
    assert!(ttl <= 810 && ttl > 0, "TTL ran down to {ttl} ms");

    assert!(locker.lock().unwrap());
    assert!(locker.is_locked());
    assert_near(pttl(&mut conn, KEY), 1000, 60, "refreshed TTL");
    assert_eq!(locker.token(), token, "a renewal keeps the token");
    assert_eq!(locker.fence(), fence, "a renewal keeps the fence");
}

fn recreates_expired_locks_on_refresh<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(locker.lock().unwrap());
    let (token, fence) = (locker.token().unwrap(), locker.fence().unwrap());

    let _: () = conn.del(KEY).unwrap();

    assert!(locker.lock().unwrap());
    assert!(locker.is_locked());
    assert_ne!(locker.token().unwrap(), token, "a new token");
    assert!(locker.fence().unwrap() > fence, "a new, higher fence");
    assert!(check(&mut conn, KEY, &locker.token().unwrap()) > 0);
    // The old token holds nothing.
    assert_eq!(check(&mut conn, KEY, &token), 0);
    assert_near(pttl(&mut conn, KEY), 1000, 60, "re-created TTL");
}

fn does_not_recapture_locks_taken_by_someone_else<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert!(locker.lock().unwrap());
    assert!(locker.is_locked());
    let _: () = conn.set(KEY, "ABCD").unwrap();

    assert!(!locker.lock().unwrap());
    assert!(!locker.is_locked());
    let v: String = conn.get(KEY).unwrap();
    assert_eq!(v, "ABCD");
}

fn ttl_is_asked_from_the_server<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = F::new(&server, KEY, go_library_options());
    assert_eq!(locker.ttl().unwrap(), None, "not held");
    assert!(locker.lock().unwrap());
    let ttl = locker.ttl().unwrap().expect("held").as_millis() as i64;
    assert_near(ttl, 1000, 60, "ttl()");
    let _: () = conn.del(KEY).unwrap();
    assert_eq!(locker.ttl().unwrap(), None, "deleted");
    assert!(locker.is_locked(), "ttl() leaves the local flag alone");
}

fn fences_increase_with_each_holder<F: Flavor>() {
    let server = Server::start();
    let mut last = 0;
    for _ in 0..5 {
        let mut locker = F::new(&server, KEY, go_library_options());
        assert!(locker.lock().unwrap());
        let fence = locker.fence().unwrap();
        assert!(fence > last, "fence {fence} after {last}");
        last = fence;
        assert!(locker.lock().unwrap());
        assert_eq!(locker.fence(), Some(fence));
        locker.unlock().unwrap();
    }
}

fn cancellation_ends_a_retry_wait<F: Flavor>() {
    let server = Server::start();
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "other", 10_000).is_some());

    let options = Options {
        retry_count: 1000,
        ..go_library_options()
    };
    let mut locker = F::new(&server, KEY, options);
    let cancel = CancelHandle::new();
    let canceller = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let at = Instant::now();
            cancel.cancel();
            at
        })
    };
    let result = locker.lock_with_context(&cancel);
    let ended = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    // Sync lockers waiting in the server see it when the slice ends.
    let late = ended.saturating_duration_since(cancelled_at);
    let bound = if locker.server_wait_supported() == Some(true) {
        Duration::from_millis(900)
    } else {
        Duration::from_millis(250)
    };
    assert!(late < bound, "returned {late:?} after cancel");
    assert!(!locker.is_locked());

    // A deadline cancels too.
    let cancel = CancelHandle::with_timeout(Duration::from_millis(200));
    let start = Instant::now();
    assert!(matches!(
        locker.lock_with_context(&cancel),
        Err(Error::Cancelled)
    ));
    assert!(start.elapsed() < Duration::from_millis(200) + bound);

    // Nothing of ours was left behind: the holder still holds it.
    thread::sleep(Duration::from_millis(100));
    assert!(check(&mut conn, KEY, "other") > 0);
    assert!(release(&mut conn, KEY, "other"));
    let exists: bool = conn.exists(KEY).unwrap();
    assert!(!exists);
}

fn says_when_the_module_is_missing<F: Flavor>() {
    let server = Server::with(Config::without_module());
    let mut locker = F::new(&server, KEY, Options::default());
    let err = locker.lock().unwrap_err();
    assert!(matches!(err, Error::ModuleNotLoaded { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("loadmodule /path/to/liblock.so"), "{msg}");
    assert!(msg.contains("MODULE LOAD"), "{msg}");
    assert!(msg.contains("enable-module-command yes"), "{msg}");
    assert!(!locker.is_locked());
}

macro_rules! go_library_suite {
    ($flavor:ty) => {
        use super::*;

        #[test]
        fn normalizes_options() {
            super::normalizes_options::<$flavor>()
        }
        #[test]
        fn obtain_fails_when_held() {
            super::obtain_fails_when_held::<$flavor>()
        }
        #[test]
        fn obtains_through_shortcut() {
            super::obtains_through_shortcut::<$flavor>()
        }
        #[test]
        fn obtains_fresh_locks() {
            super::obtains_fresh_locks::<$flavor>()
        }
        #[test]
        fn retries_if_enabled() {
            super::retries_if_enabled::<$flavor>()
        }
        #[test]
        fn does_not_retry_if_disabled() {
            super::does_not_retry_if_disabled::<$flavor>()
        }
        #[test]
        fn gives_up_when_retry_count_reached() {
            super::gives_up_when_retry_count_reached::<$flavor>()
        }
        #[test]
        fn releases_own_locks() {
            super::releases_own_locks::<$flavor>()
        }
        #[test]
        fn fails_to_release_expired_lock() {
            super::fails_to_release_expired_lock::<$flavor>()
        }
        #[test]
        fn does_not_release_someone_elses_locks() {
            super::does_not_release_someone_elses_locks::<$flavor>()
        }
        #[test]
        fn refreshes_locks() {
            super::refreshes_locks::<$flavor>()
        }
        #[test]
        fn recreates_expired_locks_on_refresh() {
            super::recreates_expired_locks_on_refresh::<$flavor>()
        }
        #[test]
        fn does_not_recapture_locks_taken_by_someone_else() {
            super::does_not_recapture_locks_taken_by_someone_else::<$flavor>()
        }
        #[test]
        fn ttl_is_asked_from_the_server() {
            super::ttl_is_asked_from_the_server::<$flavor>()
        }
        #[test]
        fn fences_increase_with_each_holder() {
            super::fences_increase_with_each_holder::<$flavor>()
        }
        #[test]
        fn cancellation_ends_a_retry_wait() {
            super::cancellation_ends_a_retry_wait::<$flavor>()
        }
        #[test]
        fn says_when_the_module_is_missing() {
            super::says_when_the_module_is_missing::<$flavor>()
        }
    };
}

mod sync_locker {
    go_library_suite!(Sync);
}

mod async_locker {
    go_library_suite!(Async);
}
