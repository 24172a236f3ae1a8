package ring

import (
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// PartitionableTransport is a test aid: a memberlist transport over a real
// memberlist.NetTransport whose traffic can be cut off and restored, to put
// one node on the far side of a network partition. Give it to
// Config.Transport; the Ring shuts it down.
//
// While blocked, it drops every packet it sends or receives, fails every
// dial, and closes every incoming stream at once, so the node neither hears
// nor is heard by anyone. It is exported for the engine's tests as well as
// this package's; production code has no use for it.
type PartitionableTransport struct {
	inner     *memberlist.NetTransport
	blocked   atomic.Bool
	packetCh  chan *memberlist.Packet
	streamCh  chan net.Conn
	stopping  chan struct{} // closed first by Shutdown: stop handing over
	innerDone chan struct{} // closed once the inner transport is down
	wg        sync.WaitGroup
	once      sync.Once
}

var _ memberlist.NodeAwareTransport = (*PartitionableTransport)(nil)

// errBlocked is what dials fail with while the transport is blocked.
var errBlocked = errors.New("ring: transport blocked (simulated partition)")

// NewPartitionableTransport listens on bindAddr (an IP) and bindPort (0: a
// free port) for UDP and TCP, unblocked.
func NewPartitionableTransport(bindAddr string, bindPort int) (*PartitionableTransport, error) {
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  bindPort,
		Logger:    log.New(io.Discard, "", 0),
	})
	if err != nil {
		return nil, err
	}
	t := &PartitionableTransport{
		inner:     inner,
		packetCh:  make(chan *memberlist.Packet),
		streamCh:  make(chan net.Conn),
		stopping:  make(chan struct{}),
		innerDone: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t, nil
}

// Block cuts the node off: from now on nothing goes in or out.
func (t *PartitionableTransport) Block() { t.blocked.Store(true) }

// Unblock restores the node's traffic.
func (t *PartitionableTransport) Unblock() { t.blocked.Store(false) }

// Blocked reports whether the transport is blocked.
func (t *PartitionableTransport) Blocked() bool { return t.blocked.Load() }

// forwardPackets and forwardStreams hand over what the inner transport
// receives. They drain it until its listeners are down (innerDone): the
// listeners block handing over what they read, so a forwarder that stopped
// early would hang the inner Shutdown.
func (t *PartitionableTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case <-t.innerDone:
			return
		case p := <-t.inner.PacketCh():
			if t.blocked.Load() {
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.stopping:
			}
		}
	}
}

func (t *PartitionableTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case <-t.innerDone:
			return
		case c := <-t.inner.StreamCh():
			if t.blocked.Load() {
				_ = c.Close()
				continue
			}
			select {
			case t.streamCh <- c:
			case <-t.stopping:
				_ = c.Close()
			}
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *PartitionableTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport; while blocked the packet is lost.
func (t *PartitionableTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.blocked.Load() {
		return time.Now(), nil
	}
	return t.inner.WriteTo(b, addr)
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *PartitionableTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.blocked.Load() {
		return time.Now(), nil
	}
	return t.inner.WriteToAddress(b, a)
}

// PacketCh implements memberlist.Transport.
func (t *PartitionableTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport; while blocked it fails.
func (t *PartitionableTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.blocked.Load() {
		return nil, errBlocked
	}
	return t.inner.DialTimeout(addr, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *PartitionableTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.blocked.Load() {
		return nil, errBlocked
	}
	return t.inner.DialAddressTimeout(a, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *PartitionableTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport. It is idempotent.
func (t *PartitionableTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.stopping)
		err = t.inner.Shutdown()
		close(t.innerDone)
		t.wg.Wait()
	})
	return err
}
