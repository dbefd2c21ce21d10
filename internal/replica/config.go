package replica

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
)

// Sentinels of the package, matched with errors.Is.
var (
	// ErrInvalid is a bad group definition (the CLI's usage error).
	ErrInvalid = errors.New("invalid replication settings")
	// ErrNotFound is an unknown replication group.
	ErrNotFound = errors.New("replication group not found")
	// ErrState: the group's state forbids the operation.
	ErrState = errors.New("replication state forbids it")
	// ErrSplitBrain: both sides took writes since their common point.
	ErrSplitBrain = errors.New("split-brain: both sides took writes since the last common point")
	// ErrRootMismatch: the replica's point would not have the source
	// snapshot's hash-tree root (docs/replication.md R10): refused.
	ErrRootMismatch = errors.New("replica point's hash-tree root differs from the source snapshot's")
)

// RPO bounds and defaults.
const (
	MinRPO      = 15 * time.Second
	MaxRPO      = 24 * time.Hour
	DefaultRPO  = 15 * time.Minute
	DefaultKeep = 24
	// maxPoints is where the retention warning starts: every point is a
	// layer in the replica disks' chains.
	maxPoints = 256
)

// Config is a replication group's definition on its source host.
type Config struct {
	Name           string                 `json:"name"`
	Disks          []wire.ReplicationDisk `json:"disks"`
	Target         string                 `json:"target"`
	Token          string                 `json:"token,omitempty"`
	CACert         string                 `json:"caCert,omitempty"`
	RPO            time.Duration          `json:"rpo"`
	Keep           int                    `json:"keep"`
	KeepWithin     time.Duration          `json:"keepWithin,omitempty"`
	BandwidthLimit int64                  `json:"bandwidthLimit,omitempty"`
	Compression    string                 `json:"compression"`
	Seed           bool                   `json:"seed,omitempty"`
}

// configFrom validates a create request into a Config.
func configFrom(r wire.CreateReplicationRequest) (Config, error) {
	c := Config{Name: r.Name, Disks: r.Disks, Target: r.Target, Token: r.Token, CACert: r.CACert,
		Keep: r.Keep, BandwidthLimit: r.BandwidthLimit, Compression: r.Compression, Seed: r.Seed, RPO: DefaultRPO}
	if err := disk.ValidName(r.Name); err != nil {
		return c, fmt.Errorf("%w: name: %v", ErrInvalid, err)
	}
	if len(r.Disks) == 0 {
		return c, fmt.Errorf("%w: no disks", ErrInvalid)
	}
	seen := map[string]bool{}
	for i, d := range c.Disks {
		if d.Target == "" {
			c.Disks[i].Target = d.Source
		}
		for _, n := range []string{d.Source, c.Disks[i].Target} {
			if err := disk.ValidName(n); err != nil {
				return c, fmt.Errorf("%w: disk: %v", ErrInvalid, err)
			}
		}
		if seen["s"+d.Source] || seen["t"+c.Disks[i].Target] {
			return c, fmt.Errorf("%w: disk %s named twice", ErrInvalid, d.Source)
		}
		seen["s"+d.Source], seen["t"+c.Disks[i].Target] = true, true
	}
	u, err := url.Parse(r.Target)
	if err != nil || (u.Scheme != "https" && u.Scheme != "unix") || (u.Scheme == "https" && u.Host == "") {
		return c, fmt.Errorf("%w: target %q: want https://HOST:PORT or unix:///path/api.sock", ErrInvalid, r.Target)
	}
	if u.Scheme == "https" && r.Token == "" {
		return c, fmt.Errorf("%w: an https target needs a replication token", ErrInvalid)
	}
	if r.RPO != "" {
		if c.RPO, err = time.ParseDuration(r.RPO); err != nil {
			return c, fmt.Errorf("%w: rpo %q: %v", ErrInvalid, r.RPO, err)
		}
	}
	if c.RPO < MinRPO || c.RPO > MaxRPO {
		return c, fmt.Errorf("%w: rpo %s out of range [%s, %s]", ErrInvalid, c.RPO, MinRPO, MaxRPO)
	}
	return c, c.retention(r)
}

// retention validates keep, keep-within, bandwidth and compression.
func (c *Config) retention(r wire.CreateReplicationRequest) error {
	if c.Keep == 0 {
		c.Keep = DefaultKeep
	}
	if c.Keep < 1 || c.Keep > 10000 {
		return fmt.Errorf("%w: keep %d out of range [1, 10000]", ErrInvalid, c.Keep)
	}
	if r.KeepWithin != "" {
		d, err := time.ParseDuration(r.KeepWithin)
		if err != nil || d <= 0 {
			return fmt.Errorf("%w: keep-within %q is not a positive duration", ErrInvalid, r.KeepWithin)
		}
		c.KeepWithin = d
	}
	if c.BandwidthLimit < 0 {
		return fmt.Errorf("%w: bandwidth limit %d is negative", ErrInvalid, c.BandwidthLimit)
	}
	switch c.Compression {
	case "":
		c.Compression = "zstd"
	case "zstd", "none":
	default:
		return fmt.Errorf("%w: compression %q: want zstd or none", ErrInvalid, c.Compression)
	}
	return nil
}

// warnings say when the retention cannot be met with the RPO.
func (c Config) warnings() []string {
	var out []string
	if c.KeepWithin > 0 && int(c.KeepWithin/c.RPO) > maxPoints {
		out = append(out, fmt.Sprintf("keep-within %s at rpo %s keeps about %d points (more than %d layers per replica disk)",
			c.KeepWithin, c.RPO, int(c.KeepWithin/c.RPO), maxPoints))
	}
	if c.KeepWithin == 0 && time.Duration(c.Keep)*c.RPO < time.Hour && c.Keep < 24 {
		out = append(out, fmt.Sprintf("keep %d at rpo %s covers only %s of history", c.Keep, c.RPO, time.Duration(c.Keep)*c.RPO))
	}
	return out
}

// view is the wire form of the settings (no token, no CA).
func (c Config) view() wire.Replication {
	v := wire.Replication{Name: c.Name, Role: "source", Disks: c.Disks, Target: c.Target, RPO: c.RPO.String(),
		Keep: c.Keep, BandwidthLimit: c.BandwidthLimit, Compression: c.Compression, Warnings: c.warnings()}
	if c.KeepWithin > 0 {
		v.KeepWithin = c.KeepWithin.String()
	}
	return v
}

// thin picks the points to keep (invariant R5): the newest keep points,
// every point younger than within, and beyond within the newest point of
// each hour for keep hours (thinning); the latest point always.
func thin(points []wire.ReplicationPoint, keep int, within time.Duration, now time.Time) map[uint64]bool {
	sorted := append([]wire.ReplicationPoint(nil), points...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Seq > sorted[j].Seq })
	out := map[uint64]bool{}
	hours := map[int64]bool{}
	for i, p := range sorted {
		switch {
		case i == 0, within == 0 && i < keep:
			out[p.Seq] = true
		case within > 0 && now.Sub(p.Time) <= within:
			out[p.Seq] = true
		case within > 0 && len(hours) < keep && !hours[p.Time.Unix()/3600]:
			hours[p.Time.Unix()/3600] = true
			out[p.Seq] = true
		}
	}
	return out
}
