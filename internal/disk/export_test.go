package disk

// abandon drops the disk as a killed process would: no checkpoint, no
// flush; what reached the files stays (the page cache survives SIGKILL).
func (d *Disk) abandon() {
	d.cancel()
	d.bg.Wait()
	d.barrier.Lock()
	defer d.barrier.Unlock()
	d.closed = true
	d.closeFiles()
}
