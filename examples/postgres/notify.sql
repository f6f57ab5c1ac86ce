-- Reload wisp when the dispatcher table changes (beyond Kamailio, which
-- reloads only when told): one NOTIFY per statement on the channel named by
-- `[dispatcher] db_notify` (here `wisp_dispatcher`). NOTIFY is delivered at
-- commit, so wisp reads the table as committed; wisp waits 200 ms for more
-- before it reloads.
CREATE OR REPLACE FUNCTION wisp_dispatcher_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('wisp_dispatcher', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS wisp_dispatcher_changed ON dispatcher;
CREATE TRIGGER wisp_dispatcher_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON dispatcher
    FOR EACH STATEMENT EXECUTE FUNCTION wisp_dispatcher_changed();
