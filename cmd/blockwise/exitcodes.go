package main

// Exit codes, documented in README.md.
const (
	exitOK       = 0
	exitFailure  = 1 // any other error
	exitUsage    = 2 // bad flags or arguments
	exitNotFound = 3 // disk, snapshot or export not found
	exitInvalid  = 4 // change ID invalid: a full backup is needed
	exitBusy     = 5 // disk locked by another process or operation in progress
	exitCorrupt  = 6 // on-disk data failed validation
)

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	return classify(err)
}

func classify(err error) int {
	return exitFailure
}
