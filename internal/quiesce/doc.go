// Package quiesce makes a restore point application-consistent: it
// freezes the guest's file systems (through the guest agent) around the
// moment a point-in-time view is taken, in one bounded window that
// always ends thawed.
//
// Vocabulary:
//   - policy: off (never freeze), try (freeze if possible, else take a
//     crash-consistent view and say why) or require (fail instead).
//   - freezer: what freezes a guest: the qemu-guest-agent on its socket
//     (AgentFreezer) or, for libvirt, virDomainFSFreeze.
//   - window: the time between freeze and thaw, bounded by
//     Options.Timeout (default 10 s); a timer thaws at its end even if
//     the view is still being taken (the point is then crash-consistent).
//   - consistency: "application" (taken while frozen) or "crash", with
//     the reason, recorded in every restore point.
//   - hooks: host-side scripts run before the freeze (a non-zero exit
//     means no freeze: try falls back, require fails) and after the thaw.
//
// Always thawed: after an error, a timeout, a cancelled context (SIGTERM
// of the CLI) the thaw runs on a fresh context; a freeze left by a
// process killed with SIGKILL is found (guest-fsfreeze-status) and
// thawed by the next run before anything else.
package quiesce
