package events

import "github.com/sfwatch/sfwatch/internal/loader"

// testOffsetPtr is the loff_t * the hand-built events pretend to pass.
const testOffsetPtr = 0x7ffc1234abcd

const bothOffsetFlags = uint32(loader.SfwatchEventFlagEVENT_OFFSET_BEFORE_OK | loader.SfwatchEventFlagEVENT_OFFSET_AFTER_OK)

// call builds an event for sendfile(out, in, NULL, count) = ret, made by
// thread 1234 of "server".
func call(out, in int32, count uint64, ret int64) Event {
	var e Event
	e.Pid, e.Tid = 1200, 1234
	e.OutFd, e.InFd, e.Count, e.Ret = out, in, count, ret
	e.StartNs, e.DurationNs = 1_000_000_000, 123_456
	setComm(&e, "server")
	return e
}

// withOffset gives e a readable pointer offset.
func withOffset(e Event, before, after int64) Event {
	e.OffsetPtr = testOffsetPtr
	e.OffsetBefore, e.OffsetAfter = before, after
	e.Flags = bothOffsetFlags
	return e
}

// withUnreadableOffset gives e a pointer offset of which only the values
// flagged in flags could be read.
func withUnreadableOffset(e Event, flags loader.SfwatchEventFlag) Event {
	e = withOffset(e, 0, 0)
	e.Flags = uint32(flags)
	return e
}

func setComm(e *Event, comm string) {
	e.SfwatchEvent.Comm = [16]uint8{}
	copy(e.SfwatchEvent.Comm[:15], comm)
}

// encode is the record the BPF program would have written for e.
func encode(e *Event) []byte {
	return append([]byte(nil), e.bytes()...)
}
