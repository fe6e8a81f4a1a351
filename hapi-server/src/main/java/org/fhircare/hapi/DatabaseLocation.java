package org.fhircare.hapi;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * Chooses the H2 database: in memory unless a file path is given by the system property
 * {@code hapi.db.file} or the environment variable {@code HAPI_DB_FILE}.
 * A full {@code spring.datasource.url} given on the command line still wins over both.
 */
final class DatabaseLocation {

	static final String IN_MEMORY_URL = "jdbc:h2:mem:fhircare;DB_CLOSE_DELAY=-1";

	private DatabaseLocation() {}

	static Map<String, Object> defaultProperties() {
		Map<String, Object> props = new HashMap<>();
		props.put("spring.datasource.url", url(configuredFile()));
		return props;
	}

	static String configuredFile() {
		String file = System.getProperty("hapi.db.file");
		if (file == null || file.isBlank()) {
			file = System.getenv("HAPI_DB_FILE");
		}
		return file == null || file.isBlank() ? null : file;
	}

	static String url(String file) {
		if (file == null) {
			return IN_MEMORY_URL;
		}
		String absolute = Path.of(file).toAbsolutePath().normalize().toString();
		return "jdbc:h2:file:" + absolute + ";DB_CLOSE_ON_EXIT=FALSE";
	}
}
