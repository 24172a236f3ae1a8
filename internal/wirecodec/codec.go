// Package wirecodec is the gRPC codec of boxoffice's engine and client: the
// protobuf wire format, encoded and decoded by the code vtprotobuf generates
// for boxoffice's messages (api/boxoffice/v1/*_vtproto.pb.go) instead of
// protobuf-go's reflection, and by protobuf-go for every other message
// (health, reflection). The bytes are the same either way, so a peer with the
// standard codec (grpcurl, another language) understands it.
package wirecodec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Name is the codec's name, and the content subtype it sends: that of gRPC's
// own protobuf codec.
const Name = "proto"

// vtMessage is what vtprotobuf generates for a message.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(b []byte) (int, error)
	UnmarshalVT(b []byte) error
}

// Codec is an encoding.CodecV2; pass it with grpc.ForceServerCodecV2 and
// grpc.ForceCodecV2.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name answers [Name].
func (Codec) Name() string { return Name }

// Marshal encodes v, a protobuf message, into one buffer, drawn from gRPC's
// pool when it is large.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		pm, ok := v.(proto.Message)
		if !ok {
			return nil, fmt.Errorf("wirecodec: cannot marshal %T: not a protobuf message", v)
		}
		b, err := proto.Marshal(pm)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		b := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(b); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pool := mem.DefaultBufferPool()
	b := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*b)[:size]); err != nil {
		pool.Put(b)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(b, pool)}, nil
}

// Unmarshal decodes data into v, which must be a new message: unlike
// proto.Unmarshal, the generated code merges into what v holds. gRPC's
// generated stubs always pass a new one.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if m, ok := v.(vtMessage); ok {
		return m.UnmarshalVT(buf.ReadOnlyData())
	}
	pm, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("wirecodec: cannot unmarshal into %T: not a protobuf message", v)
	}
	return proto.Unmarshal(buf.ReadOnlyData(), pm)
}
