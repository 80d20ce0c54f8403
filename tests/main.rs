//! Integration tests: a real server in-process on 127.0.0.1:0, called with real gRPC clients.

mod it;
