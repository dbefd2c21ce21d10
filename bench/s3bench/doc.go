// Command s3bench times a full and a 1%-incremental backup and a restore
// of one realistic image through the repository API, on the local
// backend and on versitygw over loopback, in the same run, and counts the
// requests the incremental makes; a third target, s3+cache, adds the
// CLI's cache of index files and restore points, and each target opens
// its repository again at the end, counting the GETs. bench/s3.sh runs it.
package main
