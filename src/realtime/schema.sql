-- The SQL surface of live queries, pg_reactive's: schema pgr, installed by
-- pgshare in each database it serves while realtime is on. Plain SQL and
-- PL/pgSQL, so that PGlite, a Live Share host and any PostgreSQL server all
-- run it. Subscriptions, their generation and their last seq live in
-- pgr._subscriptions, so they outlive the gateway. A statement-level trigger
-- on every table a live query reads sends `NOTIFY pgr_changed` with the
-- table's oid; PostgreSQL delivers it only when the transaction commits, and
-- the gateway then computes what entered and left each result.
--
-- Installing is idempotent; pgshare runs it when pgr.version() is not this
-- file's version.

CREATE SCHEMA IF NOT EXISTS pgr;

CREATE TABLE IF NOT EXISTS pgr._subscriptions (
    query_id text PRIMARY KEY CHECK (query_id ~ '^[A-Za-z0-9_-]{1,63}$'),
    query text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('delta', 'notify')),
    audience jsonb CHECK (audience IS NULL OR jsonb_typeof(audience) = 'object'),
    -- Which registration of query_id this is; counts up on each subscribe.
    gen bigint NOT NULL,
    -- The seq of the last message sent for query_id, of any gen.
    seq bigint NOT NULL DEFAULT 0,
    -- An unsubscribed query_id keeps its row, so that seq and gen never go
    -- back when it is registered again.
    active boolean NOT NULL DEFAULT true,
    -- The tables the query reads, whose changes recompute it.
    relations oid[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION pgr.version() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 1';

-- Sent by the trigger on every table a live query reads.
CREATE OR REPLACE FUNCTION pgr._changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgr_changed', TG_RELID::text);
    RETURN NULL;
END
$$;

-- Checks that `query` is one plain SELECT and returns the tables it reads.
-- (No EXCEPTION blocks here or anywhere in this file: the embedded engine
-- cannot recover from an error caught in one.)
CREATE OR REPLACE FUNCTION pgr._relations(query text) RETURNS oid[]
LANGUAGE plpgsql AS $$
DECLARE
    plan jsonb;
    node text;
    tables oid[];
BEGIN
    IF query IS NULL OR query !~* '^(\s|--[^\n]*(\n|$)|/\*.*?\*/)*\(*\s*(SELECT|WITH|VALUES|TABLE)\M' THEN
        RAISE EXCEPTION 'pgr.subscribe: a live query must be one SELECT'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Give a SELECT (joins, aggregates and WITH of SELECTs are fine).';
    END IF;
    -- The gateway runs it as a subquery, which also makes sure it is one
    -- statement, and one that returns rows: this fails for anything else.
    EXECUTE format(E'SELECT 1 FROM (\n%s\n) AS pgr_live_row LIMIT 0', query);
    EXECUTE 'EXPLAIN (VERBOSE, FORMAT JSON) ' || query INTO plan;
    FOR node IN SELECT jsonb_path_query(plan, 'strict $.**."Node Type"') #>> '{}' LOOP
        IF node = 'ModifyTable' THEN
            RAISE EXCEPTION 'pgr.subscribe: a live query must not change data'
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'It contains INSERT, UPDATE, DELETE or MERGE.';
        ELSIF node = 'LockRows' THEN
            RAISE EXCEPTION 'pgr.subscribe: a live query must not lock rows'
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'It contains FOR UPDATE or FOR SHARE.';
        END IF;
    END LOOP;
    SELECT coalesce(array_agg(DISTINCT c.oid), '{}') INTO tables
    FROM (
        SELECT format('%I.%I', r ->> 'Schema', r ->> 'Relation Name')::regclass AS rel
        FROM jsonb_path_query(plan, 'strict $.** ? (exists (@."Relation Name"))') AS r
    ) found
    CROSS JOIN LATERAL (
        SELECT found.rel UNION SELECT relid FROM pg_partition_ancestors(found.rel)
    ) AS tables_too(oid)
    JOIN pg_class c ON c.oid = tables_too.oid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'pgr');
    RETURN tables;
END
$$;

-- Puts the change trigger on `tables` (where it is missing).
CREATE OR REPLACE FUNCTION pgr._watch(tables oid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel oid;
BEGIN
    -- Not DDL the gateway needs to hear of.
    PERFORM set_config('pgr.quiet', 'on', true);
    FOREACH rel IN ARRAY tables LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'pgr_changed') THEN
            EXECUTE format(
                'CREATE TRIGGER pgr_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                'FOR EACH STATEMENT EXECUTE FUNCTION pgr._changed()', rel::regclass);
        END IF;
    END LOOP;
    PERFORM set_config('pgr.quiet', 'off', true);
END
$$;

-- Takes the change trigger off tables no live query reads any more.
CREATE OR REPLACE FUNCTION pgr._unwatch_unused() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel oid;
BEGIN
    PERFORM set_config('pgr.quiet', 'on', true);
    FOR rel IN
        SELECT t.tgrelid FROM pg_trigger t
        WHERE t.tgname = 'pgr_changed'
          AND NOT EXISTS (SELECT 1 FROM pgr._subscriptions s
                          WHERE s.active AND t.tgrelid = ANY (s.relations))
    LOOP
        EXECUTE format('DROP TRIGGER pgr_changed ON %s', rel::regclass);
    END LOOP;
    PERFORM set_config('pgr.quiet', 'off', true);
END
$$;

-- After DDL: the tables a live query reads now (a table may have been
-- dropped and created again), watched.
CREATE OR REPLACE FUNCTION pgr._rewatch(query_id text) RETURNS oid[]
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    tables oid[];
BEGIN
    tables := pgr._relations((SELECT s.query FROM pgr._subscriptions s
                              WHERE s.query_id = query_id AND s.active));
    PERFORM pgr._watch(tables);
    UPDATE pgr._subscriptions s SET relations = tables
    WHERE s.query_id = query_id AND s.relations IS DISTINCT FROM tables;
    RETURN tables;
END
$$;

CREATE OR REPLACE FUNCTION pgr.subscribe(
    query_id text,
    query text,
    mode text DEFAULT 'delta',
    audience jsonb DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    tables oid[];
    was_active boolean;
    new_gen bigint;
BEGIN
    IF query_id IS NULL OR query_id !~ '^[A-Za-z0-9_-]{1,63}$' THEN
        RAISE EXCEPTION 'pgr.subscribe: invalid query_id %', coalesce(quote_literal(query_id), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A query_id is 1 to 63 characters of A-Z, a-z, 0-9, _ and -.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('delta', 'notify') THEN
        RAISE EXCEPTION 'pgr.subscribe: invalid mode %', coalesce(quote_literal(mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The mode is ''delta'' (rows that entered and left) or ''notify'' (only that the result changed).';
    END IF;
    IF audience IS NOT NULL AND jsonb_typeof(audience) <> 'object' THEN
        RAISE EXCEPTION 'pgr.subscribe: the audience must be a JSON object of claims'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''{"sub": "42"}''::jsonb admits only tokens whose sub is 42.';
    END IF;
    -- psql users end statements with a semicolon; a subquery cannot.
    query := regexp_replace(query, '[[:space:];]+$', '');
    tables := pgr._relations(query);
    PERFORM pgr._watch(tables);
    SELECT s.active INTO was_active FROM pgr._subscriptions s
    WHERE s.query_id = query_id FOR UPDATE;
    IF FOUND THEN
        UPDATE pgr._subscriptions s
        SET query = query, mode = mode, audience = audience, gen = s.gen + 1,
            active = true, relations = tables, created_at = now()
        WHERE s.query_id = query_id
        RETURNING s.gen INTO new_gen;
        IF was_active THEN
            PERFORM pg_notify('pgr', format('{"type":"resubscribed","query_id":%s,"gen":%s}',
                                            to_json(query_id), new_gen));
        END IF;
    ELSE
        new_gen := 1;
        INSERT INTO pgr._subscriptions (query_id, query, mode, audience, gen, relations)
        VALUES (query_id, query, mode, audience, new_gen, tables);
    END IF;
    PERFORM pgr._unwatch_unused();
    PERFORM pg_notify('pgr_changed', 'subscriptions');
    RETURN jsonb_build_object('query_id', query_id, 'gen', new_gen, 'mode', mode);
END
$$;

CREATE OR REPLACE FUNCTION pgr.unsubscribe(query_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    UPDATE pgr._subscriptions s SET active = false
    WHERE s.query_id = query_id AND s.active;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pgr._unwatch_unused();
    PERFORM pg_notify('pgr_changed', 'subscriptions');
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION pgr.subscription_meta(query_id text)
RETURNS TABLE (mode text, audience jsonb, gen bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.mode, s.audience, s.gen FROM pgr._subscriptions s
    WHERE s.query_id = $1 AND s.active
$$;

CREATE OR REPLACE VIEW pgr.subscriptions AS
    SELECT query_id, query, mode, audience, gen, seq, created_at
    FROM pgr._subscriptions WHERE active;

-- Used by the gateway: takes the next seq of a registration that is still
-- current and publishes the message (kind 'delta' with `body` the
-- `"inserted":[...],"deleted":[...]` part, 'invalidated' or 'overflow') on
-- channel pgr, as an overflow when it does not fit in a notification. Returns the seq, or NULL when `gen` is no
-- longer current (nothing is sent then).
CREATE OR REPLACE FUNCTION pgr._publish(query_id text, gen bigint, kind text, body text)
RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    next_seq bigint;
    payload text;
BEGIN
    UPDATE pgr._subscriptions s SET seq = s.seq + 1
    WHERE s.query_id = query_id AND s.gen = gen AND s.active
    RETURNING s.seq INTO next_seq;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF kind = 'delta' THEN
        payload := format('{"query_id":%s,"seq":%s,"gen":%s,%s}',
                          to_json(query_id), next_seq, gen, body);
    ELSIF kind = 'invalidated' THEN
        payload := format('{"type":"invalidated","query_id":%s,"seq":%s,"gen":%s}',
                          to_json(query_id), next_seq, gen);
    END IF;
    IF kind = 'overflow' OR octet_length(payload) >= 8000 THEN
        payload := format('{"type":"overflow","query_id":%s,"seq":%s,"gen":%s,"fetch":true}',
                          to_json(query_id), next_seq, gen);
    END IF;
    PERFORM pg_notify('pgr', payload);
    RETURN next_seq;
END
$$;

-- DDL may break a live query or replace a table it reads: the gateway
-- checks every live query again after any.
CREATE OR REPLACE FUNCTION pgr._ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('pgr.quiet', true), '') <> 'on' THEN
        PERFORM pg_notify('pgr_changed', 'ddl');
    END IF;
END
$$;

-- Event triggers need a superuser; without one, a query broken by DDL is
-- noticed at its next change.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgr_ddl') THEN
        CREATE EVENT TRIGGER pgr_ddl ON ddl_command_end EXECUTE FUNCTION pgr._ddl();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgr_drop') THEN
        CREATE EVENT TRIGGER pgr_drop ON sql_drop EXECUTE FUNCTION pgr._ddl();
    END IF;
END
$$;
