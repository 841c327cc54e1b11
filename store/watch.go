package store

// watcher is one Watch subscription.
type watcher struct{ ch chan Change }

// Watch returns a channel that receives (without blocking the writer; a
// full channel drops the send, a receiver rereads state anyway) after every
// commit that changed one of account's mailboxes, and a cancel function
// (safe to call more than once). The channel is never closed.
func (s *Store) Watch(account string) (<-chan Change, func()) {
	w := &watcher{ch: make(chan Change, 1)}
	s.wmu.Lock()
	set := s.watchers[account]
	if set == nil {
		set = make(map[*watcher]struct{})
		s.watchers[account] = set
	}
	set[w] = struct{}{}
	s.wmu.Unlock()
	return w.ch, func() {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		if set := s.watchers[account]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(s.watchers, account)
			}
		}
	}
}

// notify wakes the watchers of the accounts in changes; called by the
// leader after a commit, so it must never block.
func (s *Store) notify(changes []Change) {
	if len(changes) == 0 {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	seen := make(map[Change]struct{}, len(changes))
	for _, c := range changes {
		if _, dup := seen[c]; dup {
			continue
		}
		seen[c] = struct{}{}
		for w := range s.watchers[c.Account] {
			select {
			case w.ch <- c:
			default:
			}
		}
	}
}
