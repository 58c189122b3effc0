-- Readers: the role `analyst` (the live page, BI tools) may read the star schema (dim_*, fact_*)
-- and its views (v_*) of this schema, and nothing else: not the ETL's bookkeeping (etl_*), no
-- INSERT/UPDATE/DELETE/TRUNCATE, no DDL. The ETL's own role (the one applying this file) owns
-- every object and stays the only writer. Re-runnable.
--
-- The role is cluster-wide. Who creates it with which password (docs/operations.md, "Connect a
-- BI tool"): on the local stack infra/stack/postgres.py (LOGIN, ANALYST_PASSWORD of stack.env);
-- in compose infra/compose/postgres/20-analyst-role.sh on the first start (LOGIN if
-- ANALYST_PASSWORD is set). If it does not exist yet, this file creates it NOLOGIN (possible
-- when the ETL's role is a superuser or has CREATEROLE); an administrator then enables it with
-- ALTER ROLE analyst LOGIN PASSWORD '…'. No password ever appears here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analyst') THEN
        BEGIN
            CREATE ROLE analyst NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- another schema's DDL created it meanwhile
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role "analyst" does not exist and role % may not create it', current_user
                    USING HINT = 'as an administrator: CREATE ROLE analyst NOLOGIN; then restart the ETL (docs/operations.md, "Connect a BI tool")';
        END;
    END IF;
END$$;

-- Grants SELECT to analyst on exactly the star relations of the current schema (dim_*, fact_*,
-- v_*) after revoking whatever else it held here. A later migration that adds a star table or
-- view ends with `SELECT etl_grant_analyst();` (CREATE OR REPLACE VIEW keeps the grants; DROP
-- and CREATE loses them); tests/integration/etl/test_analyst_role.py fails if one is missed.
CREATE OR REPLACE FUNCTION etl_grant_analyst() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    s text := current_schema();
    r record;
BEGIN
    -- PUBLIC has CONNECT unless an administrator revoked it; granting only when missing keeps
    -- concurrent runs of this file (one per schema) off the database's one catalog row.
    IF NOT has_database_privilege('analyst', current_database(), 'CONNECT') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO analyst', current_database());
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO analyst', s);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM analyst', s);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM analyst', s);
    FOR r IN
        SELECT c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = s AND c.relkind IN ('r', 'p', 'v', 'm')
          AND (c.relname LIKE 'dim\_%' OR c.relname LIKE 'fact\_%' OR c.relname LIKE 'v\_%')
        ORDER BY c.relname
    LOOP
        EXECUTE format('GRANT SELECT ON %I.%I TO analyst', s, r.relname);
    END LOOP;
    -- Tables the owner creates later are granted to nobody by default (no default privileges
    -- for analyst, and none left over): only the explicit grants above reach it.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES FROM analyst', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON SEQUENCES FROM analyst', s);
END
$fn$;
REVOKE ALL ON FUNCTION etl_grant_analyst() FROM PUBLIC;

SELECT etl_grant_analyst();
