/** Opens the store a node was configured with: PostgreSQL for a --database URL, else the data folder's
 * SQLite file. */
import { join } from "node:path";
import type { DirectoryStore } from "./store.ts";
import { SqliteDirectoryStore } from "./store_sqlite.ts";
import { PostgresDirectoryStore } from "./store_postgres.ts";
import { parseDatabaseTarget } from "./database_url.ts";
import { FILES } from "./limits.ts";

export interface StoreConfig {
  /** A postgres:// URL; absent: SQLite in the data folder. */
  database?: string;
  /** The database password, when it is kept out of the URL (a file). */
  databasePassword?: string;
  /** Connections per node to PostgreSQL. */
  poolSize?: number;
}

export interface OpenOptions {
  /** Refuse a PostgreSQL database that holds no directory yet (admin commands). */
  mustExist?: boolean;
}

export async function openDirectoryStore(
  dataDir: string,
  cfg: StoreConfig = {},
  opts: OpenOptions = {},
): Promise<DirectoryStore> {
  if (cfg.database) {
    return await PostgresDirectoryStore.open(parseDatabaseTarget(cfg.database, cfg.databasePassword), {
      poolSize: cfg.poolSize,
      mustExist: opts.mustExist,
    });
  }
  return new SqliteDirectoryStore(join(dataDir, FILES.db));
}
