// Runs once, on an empty data volume (docker-entrypoint-initdb.d, as the root user): the
// pipeline's own user, read/write on its database only, plus clusterMonitor so a service can
// see the replica-set status (the sink picks its write concern from it).
const database = process.env.MONGODB_DATABASE || "kafka_data_db";
db.getSiblingDB("admin").createUser({
  user: process.env.MONGO_APP_USERNAME,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [
    { role: "readWrite", db: database },
    { role: "clusterMonitor", db: "admin" },
  ],
});
