-- database_now --
-- The database's clock, which judges when jobs and cron ticks are due.
SELECT now() AS database_now;

-- beat_dispatcher --
-- Register a dispatcher or renew its heartbeat, with what it holds and has delivered and the
-- endpoints it knows and its threads not running; returns the database's clock so the dispatcher
-- can tell how far its own is off. CTE: the endpoints' sightings, renewed only when older than a tenth of the grace, so that
-- heartbeats do not rewrite them every time.
WITH sighted AS (
    INSERT INTO endpoint_sightings AS s (name)
    SELECT unnest(%(endpoints)s::text[])
    ON CONFLICT (name) DO UPDATE SET known_at = now()
    WHERE s.known_at < now() - make_interval(secs => %(grace)s / 10)
)
INSERT INTO dispatchers (id, host, pid, in_flight, delivered, metrics_port, endpoints,
                         threads_down)
VALUES (%(id)s, %(host)s, %(pid)s, %(in_flight)s, %(delivered)s, %(metrics_port)s,
        %(endpoints)s, %(threads_down)s)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), in_flight = EXCLUDED.in_flight, delivered = EXCLUDED.delivered,
    metrics_port = EXCLUDED.metrics_port, endpoints = EXCLUDED.endpoints,
    threads_down = EXCLUDED.threads_down
RETURNING now() AS database_now;

-- remove_dispatcher --
-- A dispatcher that stopped cleanly leaves the list at once.
DELETE FROM dispatchers WHERE id = %(id)s;

-- list_dispatchers --
-- The live dispatchers with the endpoints each knows, the leader first; the leader is the holder
-- of the unexpired lease.
SELECT d.id, d.host, d.pid,
       CASE WHEN d.id = l.holder AND l.lease_until > now()
            THEN 'leader' ELSE 'member' END AS role,
       d.started_at, d.heartbeat_at, d.in_flight, d.delivered, d.metrics_port, d.endpoints,
       d.threads_down
FROM dispatchers d CROSS JOIN dispatcher_leader l
WHERE d.heartbeat_at > now() - make_interval(secs => %(live_seconds)s)
ORDER BY role, d.started_at, d.id;

-- threads_down --
-- The live dispatchers with a thread restarting or dead, for readiness checks.
SELECT id, threads_down
FROM dispatchers
WHERE heartbeat_at > now() - make_interval(secs => %(live_seconds)s)
  AND threads_down <> '{}'::jsonb
ORDER BY started_at, id;

-- read_leader --
-- The leader's epoch and heartbeat, and whether its lease is unexpired, for readiness checks.
SELECT epoch, heartbeat_at, now() - heartbeat_at AS age, lease_until > now() AS leased
FROM dispatcher_leader;

-- take_lease --
-- Lead from now on, under a new epoch, if the lease ran out (or was never taken): the new epoch
-- fences out every write its predecessors may still attempt (hold_term).
UPDATE dispatcher_leader
SET epoch = epoch + 1, holder = %(holder)s, elected_at = now(), heartbeat_at = now(),
    lease_until = now() + make_interval(secs => %(lease)s)
WHERE lease_until <= now()
RETURNING epoch;

-- renew_lease --
-- Extend the lease of a term still current; also the heartbeat readiness checks read.
UPDATE dispatcher_leader
SET heartbeat_at = now(), lease_until = now() + make_interval(secs => %(lease)s)
WHERE epoch = %(epoch)s AND lease_until > now()
RETURNING epoch;

-- release_lease --
-- A leader stepping down frees the lease at once, for another dispatcher to lead.
UPDATE dispatcher_leader SET lease_until = now() WHERE epoch = %(epoch)s;

-- hold_term --
-- First statement of every transaction a leader's term writes in: the term is current and its
-- lease unexpired, and FOR SHARE keeps it so until the transaction ends, since taking the lease
-- (an UPDATE) waits for it. A transaction of a term that is over finds no row and writes nothing.
SELECT epoch FROM dispatcher_leader
WHERE epoch = %(epoch)s AND lease_until > now()
FOR SHARE;
