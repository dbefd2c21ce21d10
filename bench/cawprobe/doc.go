// Command cawprobe measures compare-and-write latency through the host
// API (bench/vaai_caw.sh): it renews a sector lease N times in a row, one
// compare-and-write each, and prints the latency percentiles as JSON.
package main
