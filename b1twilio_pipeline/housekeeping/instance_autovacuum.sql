-- Autovacuum settings for the Dagster instance's hottest tables, for its PostgreSQL database
-- (DAGSTER_PG_DB). Run it once the daemon has created the tables, and again after `dagster instance
-- migrate` (harmless to repeat):
--     sudo -u postgres psql -d dagster -v ON_ERROR_STOP=1 -f b1twilio_pipeline/housekeeping/instance_autovacuum.sql
--
-- Why: Dagster rewrites each sensor's and schedule's state row, in `jobs` and in `instigators`, on every
-- tick (about 160 an hour here, almost all of them "nothing changed"), and each tick row in `job_ticks`
-- once after writing it. PostgreSQL keeps every replaced row version until VACUUM frees it; autovacuum's
-- default waits for 50 dead versions plus 20 % of the table. On these four-row tables most rewrites are
-- tidied up in place and go uncounted, so the count reaches 50 only after an hour or two, while each
-- rewrite that does not fit its page takes a new one: idle, they grew by over half a megabyte an hour
-- until their first vacuum (benchmarks/results.md). With these settings they are vacuumed after a few
-- dead versions (a vacuum of a few pages takes milliseconds) and stay a few pages big. `job_ticks`, which
-- holds a day of ticks, after 50: each tick row is written twice (started, then skipped), and a dead
-- version with its five index entries is over a kilobyte.
-- The automation sensor's state is over 2 KB, kept in the TOAST table: `toast.` settings cover it.

ALTER TABLE jobs SET (
    autovacuum_vacuum_threshold = 5, autovacuum_vacuum_scale_factor = 0,
    toast.autovacuum_vacuum_threshold = 5, toast.autovacuum_vacuum_scale_factor = 0);

ALTER TABLE instigators SET (
    autovacuum_vacuum_threshold = 5, autovacuum_vacuum_scale_factor = 0,
    toast.autovacuum_vacuum_threshold = 5, toast.autovacuum_vacuum_scale_factor = 0);

ALTER TABLE job_ticks SET (autovacuum_vacuum_threshold = 50, autovacuum_vacuum_scale_factor = 0);
