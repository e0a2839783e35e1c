package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The message format between NATs. Messages travel as memberlist user messages, so the
// cluster key encrypts and authenticates them; this format only frames what is inside.
//
//	magic 'C', version 1, kind, sender length, sender (instance id),
//	nothing more for KindTakeover,
//	for KindResync: generation u32, part u16, parts u16,
//	then records to the end: op u8, proto u8, src 4+2, dst 4+2 and, for OpPut,
//	nat 4+2, status u8, tcp state u8, timeout u32 (all big-endian)
const (
	wireMagic   = 'C'
	wireVersion = 1
)

// Kind says what a message carries.
type Kind uint8

const (
	// KindDelta carries flows that changed since the last message.
	KindDelta Kind = 1
	// KindResync carries one part of the sender's whole table; once every part of a
	// generation is in, it replaces what the receiver held of that sender.
	KindResync Kind = 2
	// KindTakeover, with no records, tells the receiver that the sender is taking a group
	// over from it now: its connections' packets must stop leaving through it (see Guard).
	KindTakeover Kind = 3
)

// Op is what a record does.
type Op uint8

const (
	OpPut    Op = 1
	OpDelete Op = 2
)

// Record is one flow put or deleted.
type Record struct {
	Op   Op
	Flow Flow
}

// Message is one decoded message.
type Message struct {
	Kind   Kind
	Sender string
	// Generation, Part and Parts place a KindResync message in its table.
	Generation  uint32
	Part, Parts uint16
	Records     []Record
}

const (
	keyLen    = 1 + 6 + 6     // proto, src, dst
	putLen    = 6 + 1 + 1 + 4 // nat, status, tcp state, timeout
	maxSender = 255
)

// RecordSize is the encoded size of a put; a message of n puts is at most
// HeaderSize(sender) + n*RecordSize.
const RecordSize = 1 + keyLen + putLen

// HeaderSize is the encoded size of a message's header for sender.
func HeaderSize(sender string) int { return 4 + len(sender) + 8 }

// Encode frames m.
func Encode(m Message) ([]byte, error) {
	if len(m.Sender) == 0 || len(m.Sender) > maxSender {
		return nil, fmt.Errorf("sender name of %d bytes", len(m.Sender))
	}
	switch {
	case m.Kind != KindDelta && m.Kind != KindResync && m.Kind != KindTakeover:
		return nil, fmt.Errorf("unknown kind %d", m.Kind)
	case m.Kind == KindTakeover && len(m.Records) > 0:
		return nil, errors.New("a takeover message carries no records")
	}
	b := make([]byte, 0, HeaderSize(m.Sender)+len(m.Records)*RecordSize)
	b = append(b, wireMagic, wireVersion, byte(m.Kind), byte(len(m.Sender)))
	b = append(b, m.Sender...)
	if m.Kind == KindResync {
		b = binary.BigEndian.AppendUint32(b, m.Generation)
		b = binary.BigEndian.AppendUint16(b, m.Part)
		b = binary.BigEndian.AppendUint16(b, m.Parts)
	}
	for _, r := range m.Records {
		f := r.Flow
		if r.Op != OpPut && r.Op != OpDelete {
			return nil, fmt.Errorf("unknown op %d", r.Op)
		}
		if err := f.validateKey(); err != nil {
			return nil, err
		}
		b = append(b, byte(r.Op), f.Proto)
		b = appendAddrPort(b, f.Src)
		b = appendAddrPort(b, f.Dst)
		if r.Op == OpPut {
			if !f.NAT.IsValid() || !f.NAT.Addr().Is4() {
				return nil, fmt.Errorf("flow %s → %s: NAT address %s is not IPv4", f.Src, f.Dst, f.NAT)
			}
			b = appendAddrPort(b, f.NAT)
			b = append(b, byte(f.Status&(StatusSeenReply|StatusAssured)), f.TCPState)
			b = binary.BigEndian.AppendUint32(b, f.Timeout)
		}
	}
	return b, nil
}

// errShort is a message that ends inside a field.
var errShort = errors.New("message ends early")

// Decode reads a message Encode framed. Anything else (another magic or version, a
// truncated record, an unknown kind or op) is an error; nothing of a bad message is used.
func Decode(b []byte) (Message, error) {
	var m Message
	if len(b) < 4 {
		return m, errShort
	}
	if b[0] != wireMagic || b[1] != wireVersion {
		return m, fmt.Errorf("not a conntrack message of version %d (starts %#x %#x)", wireVersion, b[0], b[1])
	}
	m.Kind = Kind(b[2])
	n := int(b[3])
	b = b[4:]
	if n == 0 || len(b) < n {
		return m, errShort
	}
	m.Sender, b = string(b[:n]), b[n:]
	switch m.Kind {
	case KindDelta:
	case KindTakeover:
		if len(b) > 0 {
			return m, errors.New("a takeover message carries no records")
		}
	case KindResync:
		if len(b) < 8 {
			return m, errShort
		}
		m.Generation = binary.BigEndian.Uint32(b)
		m.Part, m.Parts = binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
		b = b[8:]
		if m.Parts == 0 || m.Part >= m.Parts {
			return m, fmt.Errorf("resync part %d of %d", m.Part, m.Parts)
		}
	default:
		return m, fmt.Errorf("unknown kind %d", m.Kind)
	}
	for len(b) > 0 {
		if len(b) < 1+keyLen {
			return m, errShort
		}
		r := Record{Op: Op(b[0])}
		r.Flow.Proto = b[1]
		r.Flow.Src, r.Flow.Dst = addrPort(b[2:]), addrPort(b[8:])
		b = b[1+keyLen:]
		switch r.Op {
		case OpDelete:
		case OpPut:
			if len(b) < putLen {
				return m, errShort
			}
			r.Flow.NAT = addrPort(b)
			r.Flow.Status = uint32(b[6]) & (StatusSeenReply | StatusAssured)
			r.Flow.TCPState = b[7]
			r.Flow.Timeout = binary.BigEndian.Uint32(b[8:])
			b = b[putLen:]
		default:
			return m, fmt.Errorf("unknown op %d", r.Op)
		}
		if err := r.Flow.validateKey(); err != nil {
			return m, err
		}
		m.Records = append(m.Records, r)
	}
	return m, nil
}

// validateKey reports what makes f's protocol or original tuple unusable.
func (f Flow) validateKey() error {
	if f.Proto != TCP && f.Proto != UDP {
		return fmt.Errorf("protocol %d: only TCP and UDP flows are replicated", f.Proto)
	}
	if !f.Src.IsValid() || !f.Src.Addr().Is4() || !f.Dst.IsValid() || !f.Dst.Addr().Is4() {
		return fmt.Errorf("flow %s → %s: only IPv4 flows are replicated", f.Src, f.Dst)
	}
	return nil
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().As4()
	return binary.BigEndian.AppendUint16(append(b, a[:]...), ap.Port())
}

func addrPort(b []byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), binary.BigEndian.Uint16(b[4:]))
}
