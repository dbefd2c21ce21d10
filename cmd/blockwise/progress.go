package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress draws one line on a terminal: bytes, rate, ETA. It stays
// silent when the output is not a terminal (scripts get --json instead).
type progress struct {
	w     io.Writer
	label string
	start time.Time
	last  time.Time
	on    bool
}

func newProgress(w io.Writer, label string) *progress {
	f, ok := w.(*os.File)
	on := false
	if ok {
		st, err := f.Stat()
		on = err == nil && st.Mode()&os.ModeCharDevice != 0
	}
	return &progress{w: w, label: label, start: time.Now(), on: on}
}

func (p *progress) update(done, total int64) {
	if !p.on || (time.Since(p.last) < 200*time.Millisecond && done < total) {
		return
	}
	p.last = time.Now()
	el := time.Since(p.start).Seconds()
	rate := float64(done) / max(el, 1e-3)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%s: %s / %s  %s/s  ETA %s   ", p.label, human(done), human(total), human(int64(rate)), eta)
}

func (p *progress) finish() {
	if p.on {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
