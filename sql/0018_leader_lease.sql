-- Leadership as a lease in database time instead of a session advisory lock: a leader renews
-- `lease_until` while it leads, and a dispatcher takes the lease, starting a new epoch, only once
-- it has run out. A leader that is frozen (SIGSTOP, a stalled VM) loses it after the lease, however
-- long its socket lives, and a transaction-mode pooler keeps no session to hold a lock on.
-- '-infinity': free, so the first dispatcher to campaign leads at once.
ALTER TABLE dispatcher_leader ADD COLUMN lease_until timestamptz NOT NULL DEFAULT '-infinity';
