// Package qmp is a small typed client of the QEMU Machine Protocol (and
// of the guest agent, which speaks the same JSON): one connection per
// Client, commands matched to replies by id, QEMU's errors returned as
// *Error (errors.Is ErrCommand), events delivered on a channel.
//
// Vocabulary:
//   - greeting: the {"QMP": ...} line QEMU sends first; Dial answers it
//     with qmp_capabilities.
//   - command: {"execute": NAME, "arguments": ARGS, "id": N}, answered by
//     {"return": ...} or {"error": {"class", "desc"}} with the same id.
//   - event: {"event": NAME, "data": ...}, sent at any time.
package qmp
