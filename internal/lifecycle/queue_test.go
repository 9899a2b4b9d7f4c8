package lifecycle

import (
	"reflect"
	"testing"
)

func TestQueue(t *testing.T) {
	var q Queue[int]
	q.Join(1)
	q.Join(2) // joins the pending one
	if !q.Enqueue(3) || q.Enqueue(4) || !q.Queued() {
		t.Fatal("the first Enqueue should report first, the second not, and a reload be queued")
	}
	if got := q.Finish(); !reflect.DeepEqual(got, []int{1, 2}) {
		t.Errorf("Finish returned %v, want the pending waiters [1 2]", got)
	}
	if !q.Promote() || q.Queued() {
		t.Fatal("Promote should take the queued reload and leave none queued")
	}
	if q.Promote() {
		t.Error("a second Promote found a queued reload")
	}
	if got := q.Finish(); !reflect.DeepEqual(got, []int{3, 4}) {
		t.Errorf("after Promote, Finish returned %v, want [3 4]: several queued make one", got)
	}
	q.Enqueue(5)
	if got := q.Drop(); !reflect.DeepEqual(got, []int{5}) || q.Queued() {
		t.Errorf("Drop returned %v, queued %v; want [5], none", got, q.Queued())
	}
}
