-- Fencing for dispatcher leadership: each election bumps the epoch, and writes carrying an older epoch change nothing.

CREATE TABLE dispatcher_leader (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch bigint NOT NULL,
    holder text,
    elected_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO dispatcher_leader (epoch) VALUES (0);
