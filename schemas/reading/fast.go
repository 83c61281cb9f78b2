package reading

// The fast path of Decode. Devices built on this repository's SDK (and any COSE library that
// encodes canonically) send every reading in one shape:
//
//	d2 84                      tag 18, array of 4
//	   4x|58 n  a2 01 27 04 kid  protected: bstr of {1: -8 (EdDSA), 4: kid}
//	   a0                      unprotected: empty map
//	   4x|58|59 payload        payload: bstr
//	   58 40 signature         signature: bstr of 64 bytes
//
// with definite, shortest-form lengths. decodeCommon recognises exactly that shape by hand, in
// a few hundred nanoseconds and one allocation (a string holding kid and payload, of which the
// reading's strings are substrings), and leaves anything else to go-cose. It
// accepts nothing go-cose would refuse and reads the same fields: FuzzDecodeCommon checks both
// against each other.

// decodeCommon fills m's header fields from m.Raw if it has the common shape, and reports
// whether it did.
func (m *Message) decodeCommon() bool {
	b := m.Raw
	if len(b) < 2 || b[0] != 0xd2 || b[1] != 0x84 {
		return false
	}
	b = b[2:]
	prot, b, ok := shortBstr(b)
	if !ok {
		return false
	}
	// {1: -8, 4: kid}: the keys in canonical order, kid a short byte string.
	if len(prot) < 5 || prot[0] != 0xa2 || prot[1] != 0x01 || prot[2] != 0x27 || prot[3] != 0x04 {
		return false
	}
	kid, rest, ok := shortBstr(prot[4:])
	if !ok || len(rest) != 0 {
		return false
	}
	if len(b) < 1 || b[0] != 0xa0 {
		return false
	}
	kidEnd := len(m.Raw) - len(b) // kid ends the protected header
	payload, b, ok := shortBstr(b[1:])
	if !ok {
		return false
	}
	payloadEnd := len(m.Raw) - len(b)
	sig, b, ok := shortBstr(b)
	if !ok || len(b) != 0 || len(sig) != 64 {
		return false
	}
	// One copy of the bytes for every string of the message (kid, device, names, tags).
	text := string(m.Raw[kidEnd-len(kid) : payloadEnd])
	m.Alg = Ed25519
	m.KID = text[:len(kid)]
	m.payloadText = text[len(text)-len(payload):]
	m.protected = prot
	m.msg.Payload = payload
	m.msg.Signature = sig
	return true
}

// shortBstr splits a definite-length byte string in shortest form (up to 65,535 bytes) off b.
func shortBstr(b []byte) (content, rest []byte, ok bool) {
	if len(b) < 1 || b[0]>>5 != 2 {
		return nil, nil, false
	}
	n, h := int(b[0]&0x1f), 1
	switch {
	case n < 24:
	case n == 24 && len(b) >= 2 && b[1] >= 24:
		n, h = int(b[1]), 2
	case n == 25 && len(b) >= 3 && (int(b[1])<<8|int(b[2])) > 0xff:
		n, h = int(b[1])<<8|int(b[2]), 3
	default:
		return nil, nil, false
	}
	if len(b)-h < n {
		return nil, nil, false
	}
	return b[h : h+n : h+n], b[h+n:], true
}
