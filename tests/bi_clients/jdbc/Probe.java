import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

/**
 * Reads a published database the way Metabase, DBeaver and Tableau do, through a JDBC driver, and prints JSON.
 *
 * <pre>java -cp DRIVER.jar:DIR Probe JDBC_URL USER PASSWORD QUERIES.sql|-</pre>
 *
 * What those tools do when they sync or browse a schema: DatabaseMetaData.getTables and getColumns for the
 * connection's catalog and schema (names, JDBC types, REMARKS: the table and column comments they show as
 * descriptions), then SQL: count(*) per table, every row fetched with getObject (the driver must map every
 * column type to a Java value), and each "-- name:" query of the queries file. Every item is tried on its own
 * and an error is reported in its place, so a test can say WHICH table or query a driver cannot read.
 * A jdbc:duckdb: URL is opened read-only (the serving file must never be written by a reader).
 * Java 8 and java.sql only: the program must run with every driver version the tests pin.
 */
public final class Probe {

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: Probe JDBC_URL USER PASSWORD QUERIES.sql|-");
            System.exit(2);
        }
        Map<String, String> queries = args[3].equals("-") ? new LinkedHashMap<String, String>()
                : splitQueries(new String(Files.readAllBytes(Paths.get(args[3])), StandardCharsets.UTF_8));
        Properties properties = new Properties();
        if (!args[1].isEmpty()) {
            properties.setProperty("user", args[1]);
            properties.setProperty("password", args[2]);
        }
        if (args[0].startsWith("jdbc:duckdb:")) {
            properties.setProperty("duckdb.read_only", "true"); // the property name of every duckdb_jdbc 1.x
        }
        Connection con;
        try {
            con = DriverManager.getConnection(args[0], properties);
        } catch (Exception e) {
            System.out.println("{\"open\": " + error(e) + "}");
            return;
        }
        StringBuilder out = new StringBuilder("{");
        try {
            DatabaseMetaData meta = con.getMetaData();
            out.append("\"driver\": {\"name\": ").append(json(meta.getDriverName()))
               .append(", \"version\": ").append(json(meta.getDriverVersion()))
               .append(", \"database\": ").append(json(meta.getDatabaseProductName() + " "
                                                       + meta.getDatabaseProductVersion()))
               .append(", \"read_only\": ").append(con.isReadOnly()).append("}");
            String catalog = con.getCatalog(), schema = con.getSchema();
            out.append(", \"catalog\": ").append(json(catalog)).append(", \"schema\": ").append(json(schema))
               .append(", \"tables\": ").append(tables(con, meta, catalog, schema)).append(", \"queries\": {");
            int i = 0;
            for (Map.Entry<String, String> query : queries.entrySet()) {
                String fetched = fetchAll(con, query.getValue());
                out.append(i++ == 0 ? "" : ", ").append(json(query.getKey())).append(": ")
                   .append(fetched.startsWith("{") ? fetched : "{\"rows\": " + fetched + "}");
            }
            out.append("}}");
        } catch (Exception e) { // the driver's metadata itself: nothing of the report is usable
            out.setLength(0);
            out.append("{\"failed\": ").append(error(e)).append("}");
        } finally {
            con.close();
        }
        System.out.println(out);
    }

    /** {table: {type, comment, columns, rows, rows_fetched}} for the tables and views of the schema. */
    static String tables(Connection con, DatabaseMetaData meta, String catalog, String schema) {
        List<String[]> found = new ArrayList<String[]>();
        try (ResultSet rs = meta.getTables(catalog, pattern(meta, schema), "%", null)) {
            while (rs.next()) {
                String type = rs.getString("TABLE_TYPE");
                if (type == null || !type.toUpperCase().startsWith("SYSTEM")) { // a driver's catalog views
                    found.add(new String[] {rs.getString("TABLE_NAME"), type, rs.getString("REMARKS")});
                }
            }
        } catch (Exception e) {
            return error(e);
        }
        StringBuilder out = new StringBuilder("{");
        for (String[] t : found) {
            String name = quote(schema) + "." + quote(t[0]);
            out.append(out.length() == 1 ? "" : ", ").append(json(t[0])).append(": {\"type\": ").append(json(t[1]))
               .append(", \"comment\": ").append(json(t[2]))
               .append(", \"columns\": ").append(columns(meta, catalog, schema, t[0]))
               .append(", \"rows\": ").append(count(con, "select count(*) from " + name))
               .append(", \"rows_fetched\": ").append(fetchAll(con, "select * from " + name)).append("}");
        }
        return out.append("}").toString();
    }

    /** A metadata search pattern matching exactly ``name`` (its _ and % escaped as the driver says). */
    static String pattern(DatabaseMetaData meta, String name) throws Exception {
        String escape = meta.getSearchStringEscape();
        return name.replace(escape, escape + escape).replace("_", escape + "_").replace("%", escape + "%");
    }

    /** The "-- name: x" queries of examples/queries.sql, as tests/bi_clients/probe.py splits them. */
    static Map<String, String> splitQueries(String text) {
        Map<String, String> queries = new LinkedHashMap<String, String>();
        String[] blocks = text.split("(?m)^-- name: ");
        for (int i = 1; i < blocks.length; i++) {
            int newline = blocks[i].indexOf('\n');
            String sql = blocks[i].substring(newline + 1).trim();
            while (sql.endsWith(";")) {
                sql = sql.substring(0, sql.length() - 1);
            }
            queries.put(blocks[i].substring(0, newline).trim(), sql);
        }
        return queries;
    }

    /** {column: {"type": TYPE_NAME, "jdbc_type": DATA_TYPE, "comment": REMARKS}} in ordinal order, or an error. */
    static String columns(DatabaseMetaData meta, String catalog, String schema, String table) {
        StringBuilder out = new StringBuilder("{");
        try (ResultSet rs = meta.getColumns(catalog, pattern(meta, schema), pattern(meta, table), "%")) {
            while (rs.next()) {
                out.append(out.length() == 1 ? "" : ", ").append(json(rs.getString("COLUMN_NAME")))
                   .append(": {\"type\": ").append(json(rs.getString("TYPE_NAME")))
                   .append(", \"jdbc_type\": ").append(rs.getInt("DATA_TYPE"))
                   .append(", \"comment\": ").append(json(rs.getString("REMARKS"))).append("}");
            }
        } catch (Exception e) {
            return error(e);
        }
        return out.append("}").toString();
    }

    static String count(Connection con, String sql) {
        try (Statement st = con.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return Long.toString(rs.getLong(1));
        } catch (Exception e) {
            return error(e);
        }
    }

    /** The number of rows, every column of every row read with getObject, as a BI tool fetches a result. */
    static String fetchAll(Connection con, String sql) {
        try (Statement st = con.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            int width = rs.getMetaData().getColumnCount();
            long rows = 0;
            while (rs.next()) {
                for (int c = 1; c <= width; c++) {
                    rs.getObject(c);
                }
                rows++;
            }
            return Long.toString(rows);
        } catch (Exception e) {
            return error(e);
        }
    }

    static String quote(String name) {
        return "\"" + name.replace("\"", "\"\"") + "\"";
    }

    static String error(Exception e) {
        String message = String.valueOf(e.getMessage()).trim();
        int newline = message.indexOf('\n');
        return "{\"error\": " + json(e.getClass().getSimpleName() + ": "
                                     + (newline < 0 ? message : message.substring(0, newline))) + "}";
    }

    static String json(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    private Probe() {
    }
}
