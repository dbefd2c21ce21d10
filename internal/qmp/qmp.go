package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Sentinel errors.
var (
	// ErrClosed: the monitor connection is closed (QEMU exited, or Close).
	ErrClosed = errors.New("qmp: connection closed")
	// ErrProtocol: QEMU sent something that is not QMP.
	ErrProtocol = errors.New("qmp: protocol error")
	// ErrCommand: QEMU answered a command with an error; the *Error in
	// the chain says which.
	ErrCommand = errors.New("qmp: command failed")
)

// Error is QEMU's answer to a failed command.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

// Error implements error.
func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// Unwrap makes errors.Is(err, ErrCommand) hold.
func (e *Error) Unwrap() error { return ErrCommand }

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// message is any line QEMU sends: a greeting, a reply or an event.
type message struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     *uint64         `json:"id"`
}

// Client is one QMP connection. Commands may be issued concurrently;
// each is matched to its reply by id.
type Client struct {
	conn    net.Conn
	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan message
	err     error // set once the reader stops
	events  chan Event
	done    chan struct{}
}

// Dial connects to a QMP unix socket, reads the greeting and leaves
// capabilities negotiation mode. The context bounds the handshake.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	var greet message
	line, err := r.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greet)
	}
	if err != nil || greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("%w: no greeting from %s (%v)", ErrProtocol, path, err)
	}
	conn.SetReadDeadline(time.Time{})
	c := newClient(conn, r)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// DialAgent connects to a guest agent's socket (the host side of its
// virtio-serial port). The agent sends no greeting; guest-sync-delimited
// flushes anything left in the channel by an earlier client, and a
// guest-ping within ctx proves the agent answers.
func DialAgent(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial agent %s: %w", path, err)
	}
	c := newClient(conn, bufio.NewReaderSize(conn, 64<<10))
	// A 0xFF byte makes the agent drop any partial command it holds.
	conn.Write([]byte{0xff})
	if err := c.Execute(ctx, "guest-ping", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// newClient starts the reader of a connection past its greeting.
func newClient(conn net.Conn, r *bufio.Reader) *Client {
	c := &Client{conn: conn, pending: map[uint64]chan message{},
		events: make(chan Event, 256), done: make(chan struct{})}
	go c.read(r)
	return c
}

// read delivers replies to their waiters and events to Events until
// the connection ends.
func (c *Client) read(r *bufio.Reader) {
	defer close(c.done)
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if err != nil {
			break
		}
		var m message
		if jsonUnmarshal(line, &m) != nil {
			continue // not one of ours; QMP lines are whole JSON objects
		}
		if m.Event != "" {
			select {
			case c.events <- Event{Name: m.Event, Data: m.Data}:
			default: // nobody listens: events are advisory
			}
			continue
		}
		if m.ID == nil {
			continue
		}
		c.mu.Lock()
		ch := c.pending[*m.ID]
		delete(c.pending, *m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.events)
}

// Events returns the channel of asynchronous events (buffered; events
// are dropped when it is full). It is closed when the connection ends.
func (c *Client) Events() <-chan Event { return c.events }

// Execute runs one command with args (marshalled as its "arguments",
// nil for none) and decodes its "return" into out (nil to ignore).
func (c *Client) Execute(ctx context.Context, cmd string, args, out any) error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan message, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	c.writeMu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	_, err = c.conn.Write(append(b, '\n'))
	c.conn.SetWriteDeadline(time.Time{})
	c.writeMu.Unlock()
	if err != nil {
		c.forget(id)
		return fmt.Errorf("%w: qmp %s: %v", ErrClosed, cmd, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return c.closedErr()
		}
		return decode(cmd, m, out)
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func decode(cmd string, m message, out any) error {
	if m.Error != nil {
		m.Error.Command = cmd
		return m.Error
	}
	if out == nil || m.Return == nil {
		return nil
	}
	if err := json.Unmarshal(m.Return, out); err != nil {
		return fmt.Errorf("%w: qmp %s: reply: %v", ErrProtocol, cmd, err)
	}
	return nil
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close ends the connection and waits for its reader.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// jsonUnmarshal decodes one line of the peer (a seam for the fuzz test).
func jsonUnmarshal(b []byte, m *message) error { return json.Unmarshal(b, m) }
