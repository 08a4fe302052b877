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
-- of a current epoch.
SELECT d.id, d.host, d.pid,
       CASE WHEN d.id = l.holder AND l.heartbeat_at > now() - make_interval(secs => %(live_seconds)s)
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
-- The dispatcher's heartbeat, for readiness checks.
SELECT epoch, heartbeat_at, now() - heartbeat_at AS age FROM dispatcher_leader;

-- try_leader_lock --
-- Session-level: held until unlocked or until this connection ends.
SELECT pg_try_advisory_lock(hashtext('scheduler.dispatcher')) AS acquired;

-- begin_epoch --
-- A new leader fences out every leader write its predecessors may still attempt.
UPDATE dispatcher_leader
SET epoch = epoch + 1, holder = %(holder)s, elected_at = now(), heartbeat_at = now()
RETURNING epoch;

-- confirm_leadership --
-- Still holding the lock and still the current epoch; also the heartbeat readiness checks read.
UPDATE dispatcher_leader SET heartbeat_at = now()
WHERE epoch = %(epoch)s
  AND EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  )
RETURNING epoch;
