package events

import "math/bits"

// Decimal formatting for the per-event renderers. strconv.AppendUint
// formats into a buffer of its own and then copies it onto dst; these write
// the digits in place, two at a time, which halves what AppendText and
// AppendJSON spend on numbers (most of an event line).

const digitPairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

var powersOf10 = [20]uint64{
	1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
}

// decimalWidth is the number of decimal digits of n (1 for 0).
func decimalWidth(n uint64) int {
	if n < 10 {
		return 1
	}
	t := bits.Len64(n) * 1233 >> 12 // floor(log10(2^bits)), within one
	if n >= powersOf10[t] {
		return t + 1
	}
	return t
}

// appendUint is strconv.AppendUint(dst, n, 10).
func appendUint(dst []byte, n uint64) []byte {
	if n < 10 {
		return append(dst, byte('0'+n))
	}
	w := decimalWidth(n)
	l := len(dst)
	if cap(dst)-l < w {
		dst = append(dst, make([]byte, w)...)[:l]
	}
	dst = dst[:l+w]
	b := dst[l:]
	i := w
	for n >= 100 {
		q := n / 100
		r := (n - q*100) * 2
		i -= 2
		b[i], b[i+1] = digitPairs[r], digitPairs[r+1]
		n = q
	}
	if n >= 10 {
		b[0], b[1] = digitPairs[n*2], digitPairs[n*2+1]
	} else {
		b[0] = byte('0' + n)
	}
	return dst
}

// appendInt is strconv.AppendInt(dst, n, 10).
func appendInt(dst []byte, n int64) []byte {
	if n < 0 {
		// -n overflows for math.MinInt64, and uint64 of the result is
		// still its magnitude.
		return appendUint(append(dst, '-'), uint64(-n))
	}
	return appendUint(dst, uint64(n))
}
