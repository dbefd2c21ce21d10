package main

import (
	"errors"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/repo"
)

// Exit codes, documented in README.md.
const (
	exitOK           = 0
	exitFailure      = 1 // any other error
	exitUsage        = 2 // bad flags or arguments
	exitNotFound     = 3 // disk, snapshot, export or restore point not found
	exitInvalid      = 4 // change ID invalid: a full backup is needed
	exitBusy         = 5 // locked by another process, or an operation is in progress
	exitCorrupt      = 6 // stored data failed validation
	exitUnauthorized = 7 // wrong password or token
	exitCheckFailed  = 8 // repo check found errors
)

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	return classify(err)
}

// classes maps sentinel errors to exit codes, first match wins.
var classes = []struct {
	code int
	errs []error
}{
	{exitUsage, []error{errUsage, disk.ErrInvalidName, disk.ErrMisaligned, disk.ErrShrink}},
	{exitNotFound, []error{disk.ErrNotFound, repo.ErrNotFound}},
	{exitInvalid, []error{disk.ErrChangeIDInvalid}},
	{exitBusy, []error{disk.ErrBusy, repo.ErrLocked}},
	{exitCorrupt, []error{disk.ErrCorrupt, repo.ErrCorrupt}},
	{exitUnauthorized, []error{repo.ErrWrongPassword}},
	{exitCheckFailed, []error{errCheckFailed}},
}

func classify(err error) int {
	for _, c := range classes {
		for _, e := range c.errs {
			if errors.Is(err, e) {
				return c.code
			}
		}
	}
	return exitFailure
}
