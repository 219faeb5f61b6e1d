// pgjdbc (Debian's libpostgresql-jdbc-java) at PGHOST:PGPORT/PGDATABASE:
// prepareThreshold at its default (5: server-prepared from the fifth run),
// 1 (server-prepared from the first) and 0 (never), a batch with
// reWriteBatchedInserts, DatabaseMetaData, CopyManager both ways, and a
// live query registered with pgr.subscribe read over a WebSocket
// (java.net.http's).
// Run as `java -cp /usr/share/java/postgresql.jar Pgjdbc.java`.

import java.io.StringReader;
import java.io.StringWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class Pgjdbc {
    static final String URL = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
            + System.getenv("PGDATABASE");

    static void step(String name) {
        System.out.println("-- " + name);
    }

    static void expect(Object actual, Object expected, String what) {
        if (!Objects.equals(actual, expected)) {
            fail("MISMATCH in " + what + ": expected " + expected + ", got " + actual);
        }
    }

    static void fail(String message) {
        System.out.println("FAILED: " + message);
        System.exit(1);
    }

    static Connection connect(String... settings) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGUSER"));
        for (int i = 0; i < settings.length; i += 2) {
            props.setProperty(settings[i], settings[i + 1]);
        }
        return DriverManager.getConnection(URL, props);
    }

    static long scalar(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    /** Runs a statement ten times; returns the first run that used a server-prepared statement (0: none). */
    static int runTenTimes(Connection conn, String table) throws SQLException {
        int firstServerPrepared = 0;
        try (PreparedStatement ps = conn.prepareStatement("SELECT label, id * 2 FROM " + table + " WHERE id = ?")) {
            for (int run = 1; run <= 10; run++) {
                ps.setInt(1, run);
                if (firstServerPrepared == 0 && ps.unwrap(PGStatement.class).isUseServerPrepare()) {
                    firstServerPrepared = run;
                }
                try (ResultSet rs = ps.executeQuery()) {
                    if (!rs.next()) fail("no row for id " + run);
                    expect(rs.getString(1), "label " + run, "label of row " + run);
                    expect(rs.getInt(2), run * 2, "doubled id of row " + run);
                    if (rs.next()) fail("more than one row for id " + run);
                }
            }
        }
        return firstServerPrepared;
    }

    /** The text frames of a live query's WebSocket, whole, in order. */
    static BlockingQueue<String> liveFrames(String queryId) {
        BlockingQueue<String> frames = new LinkedBlockingQueue<>();
        String ws = System.getenv("PGSHARE_HTTP").replaceFirst("^http", "ws");
        HttpClient.newHttpClient().newWebSocketBuilder()
                .buildAsync(URI.create(ws + "/ws/" + System.getenv("PGDATABASE") + "/" + queryId), new WebSocket.Listener() {
                    final StringBuilder partial = new StringBuilder();

                    @Override
                    public CompletionStage<?> onText(WebSocket socket, CharSequence data, boolean last) {
                        partial.append(data);
                        if (last) {
                            frames.add(partial.toString());
                            partial.setLength(0);
                        }
                        socket.request(1);
                        return null;
                    }
                })
                .join();
        return frames;
    }

    static String nextFrame(BlockingQueue<String> frames, String what) throws InterruptedException {
        String frame = frames.poll(10, TimeUnit.SECONDS);
        if (frame == null) fail("no frame within 10 s: " + what);
        return frame;
    }

    static void liveQuery() throws Exception {
        step("live query: pgr.subscribe server-prepared, then deltas over a WebSocket");
        try (Connection conn = connect("prepareThreshold", "1")) {
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_live (id int PRIMARY KEY, label text)");
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT pgr.subscribe(?, ?)::text")) {
                ps.setString(1, "jdbc_live");
                ps.setString(2, "SELECT id, label FROM jdbc_live");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (!rs.getString(1).contains("\"query_id\": \"jdbc_live\"")) fail("pgr.subscribe returned " + rs.getString(1));
                }
            }
            BlockingQueue<String> frames = liveFrames("jdbc_live");
            String first = nextFrame(frames, "subscribed");
            if (!first.startsWith("{\"type\":\"subscribed\"")) fail("first frame: " + first);
            String snapshot = nextFrame(frames, "snapshot");
            if (!snapshot.contains("\"type\":\"snapshot\"") || !snapshot.contains("\"inserted\":[]")) fail("snapshot: " + snapshot);
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_live VALUES (?, ?)")) {
                ps.setInt(1, 7);
                ps.setString(2, "seven");
                ps.executeUpdate();
            }
            String delta = nextFrame(frames, "the delta of an INSERT");
            if (!delta.contains("\"inserted\":[{\"id\":7,\"label\":\"seven\"}]") || !delta.contains("\"deleted\":[]")) {
                fail("delta: " + delta);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection conn = connect()) {
            step("setup, with autocommit (the default)");
            try (Statement st = conn.createStatement()) {
                st.execute("DROP TABLE IF EXISTS jdbc_items, jdbc_batch, jdbc_copy");
                st.execute("CREATE TABLE jdbc_items (id int PRIMARY KEY, label text NOT NULL)");
                st.execute("INSERT INTO jdbc_items SELECT g, 'label ' || g FROM generate_series(1, 10) g");
            }

            step("prepareThreshold 5 (the default): server-prepared from the fifth run");
            expect(runTenTimes(conn, "jdbc_items"), 5, "first server-prepared run at the default threshold");

            step("a transaction: commit and rollback");
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement("UPDATE jdbc_items SET label = ? WHERE id = ?")) {
                for (int run = 1; run <= 7; run++) {
                    ps.setString(1, "changed");
                    ps.setInt(2, run);
                    expect(ps.executeUpdate(), 1, "rows updated by run " + run);
                }
            }
            expect(scalar(conn, "SELECT count(*) FROM jdbc_items WHERE label = 'changed'"), 7L, "changed rows inside the transaction");
            conn.rollback();
            expect(scalar(conn, "SELECT count(*) FROM jdbc_items WHERE label = 'changed'"), 0L, "changed rows after rollback");
            conn.commit();
            conn.setAutoCommit(true);
        }

        for (String threshold : new String[] {"1", "0"}) {
            step("prepareThreshold " + threshold);
            try (Connection conn = connect("prepareThreshold", threshold)) {
                expect(runTenTimes(conn, "jdbc_items"), threshold.equals("1") ? 1 : 0,
                        "first server-prepared run at threshold " + threshold);
            }
        }

        try (Connection conn = connect("reWriteBatchedInserts", "true")) {
            step("a batch of 500 inserts with reWriteBatchedInserts=true");
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_batch (id int PRIMARY KEY, name text, score double precision)");
            }
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_batch (id, name, score) VALUES (?, ?, ?)")) {
                for (int i = 0; i < 500; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "name " + i);
                    ps.setDouble(3, i / 2.0);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                expect(counts.length, 500, "update counts of the batch");
                for (int count : counts) {
                    if (count != Statement.SUCCESS_NO_INFO && count != 1) fail("update count " + count + " in the batch");
                }
            }
            conn.commit();
            conn.setAutoCommit(true);
            expect(scalar(conn, "SELECT count(*) FROM jdbc_batch"), 500L, "rows inserted by the batch");
            expect(scalar(conn, "SELECT sum(id) FROM jdbc_batch"), 124750L, "sum of the batch's ids");

            step("DatabaseMetaData: getTables and getColumns");
            DatabaseMetaData meta = conn.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, "public", "jdbc_%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            expect(tables, List.of("jdbc_batch", "jdbc_items"), "tables from getTables");
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, "public", "jdbc_batch", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " " + rs.getString("IS_NULLABLE"));
                }
            }
            expect(columns, List.of("id int4 NO", "name text YES", "score float8 YES"), "columns from getColumns");
            try (ResultSet rs = meta.getPrimaryKeys(null, "public", "jdbc_items")) {
                if (!rs.next()) fail("no primary key from getPrimaryKeys");
                expect(rs.getString("COLUMN_NAME"), "id", "primary key column");
            }
            expect(meta.getDatabaseProductName(), "PostgreSQL", "database product name");

            step("CopyManager: copyIn and copyOut");
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_copy (id int, note text)");
            }
            CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder csv = new StringBuilder();
            for (int i = 0; i < 1000; i++) csv.append(i).append(",\"note ").append(i).append(", quoted\"\n");
            long copiedIn = copy.copyIn("COPY jdbc_copy FROM STDIN (FORMAT csv)", new StringReader(csv.toString()));
            expect(copiedIn, 1000L, "rows of copyIn");
            expect(scalar(conn, "SELECT sum(id) FROM jdbc_copy"), 499500L, "sum of the copied ids");
            StringWriter out = new StringWriter();
            long copiedOut = copy.copyOut("COPY (SELECT * FROM jdbc_copy WHERE id < 2 ORDER BY id) TO STDOUT (FORMAT csv)", out);
            expect(copiedOut, 2L, "rows of copyOut");
            expect(out.toString(), "0,\"note 0, quoted\"\n1,\"note 1, quoted\"\n", "text of copyOut");
            expect(runTenTimes(conn, "jdbc_items"), 5, "server-prepared run after COPY");
        }
        liveQuery();
        System.out.println("pgjdbc: all checks passed");
    }
}
