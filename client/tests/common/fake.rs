//! A scripted RESP server on loopback, for replies a real server will not
//! give (such as a module from before server-side waiting).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Answers each command (its arguments as strings) with a raw RESP reply.
pub type Handler = Box<dyn FnMut(&[String]) -> String + Send>;

/// A fake server: serves every connection with one shared handler and
/// records the `LOCK.*` commands it was sent.
pub struct FakeServer {
    pub url: String,
    pub log: Arc<Mutex<Vec<Vec<String>>>>,
}

impl FakeServer {
    pub fn start(handler: Handler) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Mutex::new(handler));
        let thread_log = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (handler, log) = (handler.clone(), thread_log.clone());
                thread::spawn(move || serve(stream, handler, log));
            }
        });
        FakeServer { url, log }
    }

    /// The `LOCK.*` commands received so far.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: Arc<Mutex<Handler>>, log: Arc<Mutex<Vec<Vec<String>>>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(args) = read_command(&mut reader) {
        let reply = if args[0].to_ascii_uppercase().starts_with("LOCK.") {
            log.lock().unwrap().push(args.clone());
            (handler.lock().unwrap())(&args)
        } else if args[0].eq_ignore_ascii_case("PING") {
            "+PONG\r\n".to_owned()
        } else {
            "+OK\r\n".to_owned()
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let header = read_line(reader)?;
    let count: usize = header.strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let len: usize = read_line(reader)?.strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0; len + 2];
        reader.read_exact(&mut buf).ok()?;
        buf.truncate(len);
        args.push(String::from_utf8(buf).ok()?);
    }
    Some(args)
}
