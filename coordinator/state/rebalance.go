package state

// Rebalance computes the shard owners (indices into members) of a new
// generation with the given members from the previous generation prev. It
// keeps every surviving member's shards, gives orphaned shards (ascending) to
// the least loaded member, then moves shards from the most loaded member to
// the least loaded one until the loads differ by at most one; each move takes
// the donor's highest shard. Ties go to the lowest member index, so the
// result is deterministic, and the number of moved shards is the minimum
// that balances the loads. It returns nil when members is empty or shards < 1.
func Rebalance(prev Generation, members []Member, shards int) []int {
	if len(members) == 0 || shards < 1 {
		return nil
	}
	idx := make(map[string]int, len(members))
	for i, m := range members {
		idx[m.ID] = i
	}
	owner := make([]int, shards)
	load := make([]int, len(members))
	for s := range owner {
		owner[s] = -1
		if s < len(prev.Owner) && prev.Owner[s] >= 0 && prev.Owner[s] < len(prev.Members) {
			if i, ok := idx[prev.Members[prev.Owner[s]].ID]; ok {
				owner[s] = i
				load[i]++
			}
		}
	}
	least := func() int {
		b := 0
		for i := range load {
			if load[i] < load[b] {
				b = i
			}
		}
		return b
	}
	most := func() int {
		b := 0
		for i := range load {
			if load[i] > load[b] {
				b = i
			}
		}
		return b
	}
	for s := range owner {
		if owner[s] < 0 {
			i := least()
			owner[s] = i
			load[i]++
		}
	}
	for {
		hi, lo := most(), least()
		if load[hi]-load[lo] <= 1 {
			return owner
		}
		for s := shards - 1; s >= 0; s-- {
			if owner[s] == hi {
				owner[s] = lo
				break
			}
		}
		load[hi]--
		load[lo]++
	}
}
