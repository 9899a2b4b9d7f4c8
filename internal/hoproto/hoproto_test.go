package hoproto

import (
	"bytes"
	"testing"
)

func TestPackRoundTrip(t *testing.T) {
	var p Pack
	p.Reset()
	p.Add(7, []byte("state"), []byte("unread"))
	p.Add(8, nil, nil)
	p.Add(1<<60, bytes.Repeat([]byte{1}, 300), []byte{2})
	items, err := ParsePack(p.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || PackLen(p.Bytes()) != 3 || p.Len() != 3 {
		t.Fatalf("%d items (PackLen %d)", len(items), PackLen(p.Bytes()))
	}
	if it := items[0]; it.ID != 7 || string(it.State) != "state" || string(it.Unread) != "unread" {
		t.Errorf("item 0: %+v", it)
	}
	if it := items[1]; it.ID != 8 || len(it.State) != 0 || len(it.Unread) != 0 {
		t.Errorf("item 1: %+v", it)
	}
	if it := items[2]; it.ID != 1<<60 || len(it.State) != 300 || !bytes.Equal(it.Unread, []byte{2}) {
		t.Errorf("item 2: %d, %d bytes of state, unread %v", it.ID, len(it.State), it.Unread)
	}
	p.Reset()
	if p.Len() != 0 || len(p.Bytes()) != 3 {
		t.Errorf("after Reset: %d items, %d bytes", p.Len(), len(p.Bytes()))
	}
}

func TestAnswersRoundTrip(t *testing.T) {
	var a Answers
	a.Reset()
	a.Add(1, "")
	a.Add(2, "not this one")
	long := string(bytes.Repeat([]byte{'x'}, 2*ReasonMax))
	a.Add(3, long)
	as, err := ParseAnswers(a.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 3 || as[0] != (Answer{ID: 1}) || as[1] != (Answer{ID: 2, Reason: "not this one"}) || len(as[2].Reason) != ReasonMax {
		t.Fatalf("answers %+v", as)
	}
	if Refusals(a.Bytes()) != 2 {
		t.Errorf("Refusals %d, want 2", Refusals(a.Bytes()))
	}
	// PackMax answers of the longest reason fit the 4 KiB the old side reads.
	a.Reset()
	for i := range PackMax {
		a.Add(uint64(i), long)
	}
	if len(a.Bytes()) > 4096 {
		t.Errorf("a full pack of answers takes %d bytes, more than 4096", len(a.Bytes()))
	}
}

// Every message cut short, or with a byte too many, is refused whole.
func TestMalformed(t *testing.T) {
	var p Pack
	p.Reset()
	p.Add(1, []byte("s"), []byte("u"))
	p.Add(2, []byte("t"), nil)
	msg := p.Bytes()
	for n := range len(msg) {
		if _, err := ParsePack(msg[:n]); err == nil {
			t.Errorf("a pack cut to %d of %d bytes parsed", n, len(msg))
		}
	}
	if _, err := ParsePack(append(append([]byte(nil), msg...), 0)); err == nil {
		t.Error("a pack with a byte too many parsed")
	}
	too := append([]byte(nil), msg...)
	too[1] = PackMax + 1
	if _, err := ParsePack(too); err == nil {
		t.Error("a pack of more than PackMax parsed")
	}
	var a Answers
	a.Reset()
	a.Add(1, "why")
	am := a.Bytes()
	for n := range len(am) {
		if _, err := ParseAnswers(am[:n]); err == nil {
			t.Errorf("answers cut to %d of %d bytes parsed", n, len(am))
		}
	}
	bad := append([]byte(nil), am...)
	bad[3+8] = 'X'
	if _, err := ParseAnswers(bad); err == nil || Refusals(bad) != 0 {
		t.Error("an answer of an unknown kind parsed")
	}
}
