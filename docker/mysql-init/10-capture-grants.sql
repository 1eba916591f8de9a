-- Run once by the MySQL image when it creates its data directory (docker-compose.yml).
-- `mvsched capture` reads the binary log like a replica does.
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'mvsched'@'%';
