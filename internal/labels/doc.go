// Package labels keeps the labels of a datastore's disks (key=value
// pairs an operator sets, like "tier=gold") and reads label selectors,
// which policies use to pick their sources by what a disk is rather
// than by its name.
//
// Vocabulary:
//   - labels: a disk's map of key to value. Keys are 1-63 characters of
//     letters, digits and "._/-", starting and ending with a letter or
//     digit; values are 0-63 of letters, digits and "._-".
//   - selector: requirements joined by commas, all of which a disk's
//     labels must meet: "k=v" (or "k==v"), "k!=v" (absent or another
//     value), "k" (present), "!k" (absent). The value of "=" and "!="
//     may be a shell glob (path.Match): "env=prod-*".
//   - Store: DATASTORE/disk-labels, every disk's labels in one framed
//     file (docs/labels.md), kept in memory and written whole on each
//     change (temp file, fsync, rename, fsync dir).
package labels
