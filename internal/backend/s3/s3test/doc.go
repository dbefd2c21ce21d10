// Package s3test runs a real S3 server, versitygw, as a child process on
// 127.0.0.1 for tests and benchmarks: Start launches it on a free port
// over a scratch directory, Stop kills it. Main wires that into a
// package's TestMain. scripts/versitygw.sh installs the binary.
package s3test
