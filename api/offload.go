package api

// Offload is what the host can do inside the datastore instead of moving
// data through its client (VAAI's primitives), in GET /v1/host.
type Offload struct {
	// Reflink: full clones share extents (FICLONE) on this datastore's
	// file system; otherwise they are copied with copy_file_range.
	Reflink bool `json:"reflink"`
	// MaxCopySegment is the largest range one POST .../copy moves, in
	// bytes (0: the host has no copy offload; callers copy themselves).
	MaxCopySegment int64 `json:"maxCopySegment"`
	// UnmapGranularity is the unit TRIM frees space in (the engine's
	// grain); partial units are zeroed, not freed.
	UnmapGranularity int64 `json:"unmapGranularity"`
	// CompareAndWriteMax is the largest POST .../compare-and-write, in
	// bytes (one grain of the default 4 KiB; a disk with a smaller grain
	// accepts at most its grain); CompareAndWriteAlign is the alignment
	// of its offset and length.
	CompareAndWriteMax   int64 `json:"compareAndWriteMax"`
	CompareAndWriteAlign int64 `json:"compareAndWriteAlign"`
}

// DatastoreSpace is the answer of GET /v1/datastore (and part of GET
// /v1/host): the datastore file system's capacity and use, and what the
// disks were promised (thin provisioning may promise more than there is).
type DatastoreSpace struct {
	Path        string `json:"path"`
	Capacity    int64  `json:"capacity"`    // bytes of the file system
	Used        int64  `json:"used"`        // bytes in use (capacity minus free)
	Free        int64  `json:"free"`        // bytes an unprivileged writer can still take
	Provisioned int64  `json:"provisioned"` // sum of the disks' sizes
	Disks       int    `json:"disks"`
	// Overcommit is Provisioned / Capacity: above 1 the disks could not
	// all be filled.
	Overcommit float64 `json:"overcommit"`
	// UsedRatio is Used / Capacity; WarnRatio the soft threshold (serve
	// --space-warn); Warning says why when UsedRatio ≥ WarnRatio.
	UsedRatio float64 `json:"usedRatio"`
	WarnRatio float64 `json:"warnRatio"`
	Warning   string  `json:"warning,omitempty"`
}

// CompareAndWriteRequest is the body of POST
// /v1/disks/{disk}/compare-and-write (ATS): write New at Offset if and
// only if the disk holds exactly Expected there. Both are base64 in
// JSON, equally long, at most Offload.CompareAndWriteMax bytes, and
// Offset and the length are multiples of 512.
type CompareAndWriteRequest struct {
	Offset   int64  `json:"offset"`
	Expected []byte `json:"expected"`
	New      []byte `json:"new"`
}

// CompareAndWriteResult answers a compare-and-write that wrote.
type CompareAndWriteResult struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// ProblemMiscompare (409): a compare-and-write found other bytes than
// expected and wrote nothing; the problem's Current holds them.
const ProblemMiscompare = "miscompare"
