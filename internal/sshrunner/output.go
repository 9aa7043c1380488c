package sshrunner

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
)

// Bounds on what a host's output may cost the manager, whatever it prints.
const (
	// maxLine is the longest line kept: the rest of a longer line is read and dropped.
	maxLine = 64 * 1024
	// outputBudget is how much of a command's output (both streams, each line counting lineCost more) is redacted,
	// logged and kept; the rest is read, so the command can finish, and counted.
	outputBudget = 8 << 20
	lineCost     = 64
	// maxCapture is how much standard output Output returns.
	maxCapture = 64 * 1024
)

// output reads a command's two streams: it drains them to their end whatever their size, hands each line (cut at
// maxLine) to a handler while the budget lasts, and notes when the host first sent anything.
type output struct {
	mu       sync.Mutex
	budget   int
	dropped  int64
	answered chan struct{}
	once     sync.Once
}

func newOutput() *output {
	return &output{budget: outputBudget, answered: make(chan struct{})}
}

// spend takes n bytes of the budget and says whether there were enough; what is refused is counted as dropped.
func (o *output) spend(n int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.budget < n {
		o.budget = 0
		o.dropped += int64(n)
		return false
	}
	o.budget -= n
	return true
}

// drop counts bytes read past the budget or past the end of a cut line.
func (o *output) drop(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropped += int64(n)
}

// droppedBytes returns how much output was read and not kept.
func (o *output) droppedBytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

func (o *output) exhausted() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.budget == 0
}

// read drains r, calling line for each line (without its end of line; cut says it was longer than maxLine and
// only its start is given) while the budget lasts.
func (o *output) read(r io.Reader, line func(text string, cut bool)) {
	br := bufio.NewReaderSize(r, 32*1024)
	var buf []byte
	cut := false
	emit := func() {
		if o.spend(len(buf) + lineCost) {
			line(string(bytes.TrimSuffix(buf, []byte("\r"))), cut)
		}
		buf, cut = buf[:0], false
	}
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			o.once.Do(func() { close(o.answered) })
		}
		ended := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		if ended {
			chunk = chunk[:len(chunk)-1]
		}
		switch {
		case o.exhausted():
			o.drop(len(chunk))
			buf, cut = buf[:0], false
		case len(buf)+len(chunk) > maxLine:
			keep := maxLine - len(buf)
			buf = append(buf, chunk[:keep]...)
			o.drop(len(chunk) - keep)
			cut = true
		default:
			buf = append(buf, chunk...)
		}
		if ended || (err != nil && !errors.Is(err, bufio.ErrBufferFull) && (len(buf) > 0 || cut)) {
			emit()
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// limitedBuffer keeps the first maxCapture bytes of the lines added to it.
type limitedBuffer struct {
	mu   sync.Mutex
	buf  strings.Builder
	full bool
}

func (b *limitedBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.full || b.buf.Len()+len(line) >= maxCapture {
		b.full = true
		return
	}
	b.buf.WriteString(line + "\n")
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
