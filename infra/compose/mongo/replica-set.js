// Healthcheck of the single-node replica set "rs0" (mongosh): initiates it the first time,
// healthy once this node is a writable primary, so majority writes are acknowledged.
// Before the set exists rs.status() throws NotYetInitialized; during the image's init phase
// (no --replSet yet) it throws NoReplicationEnabled and the check stays unhealthy.
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] });
}
if (!db.hello().isWritablePrimary) quit(1);
