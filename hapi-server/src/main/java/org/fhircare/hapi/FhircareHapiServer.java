package org.fhircare.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.match.config.SubscriptionProcessorConfig;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.context.PropertyPlaceholderAutoConfiguration;
import org.springframework.boot.autoconfigure.jdbc.DataSourceAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.web.embedded.EmbeddedWebServerFactoryCustomizerAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.HttpEncodingAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.ServletWebServerFactoryAutoConfiguration;
import org.springframework.context.annotation.Import;

/**
 * Entry point: a HAPI FHIR R4 JPA server on H2, serving the FHIR base at /fhir.
 *
 * <p>The imported configurations are HAPI's own Spring configurations (JPA storage for R4,
 * batch jobs, subscription matching and delivery). Everything we choose ourselves lives in
 * {@link StorageConfig} (settings, database wiring) and {@link FhirServerConfig} (REST layer).
 */
@SpringBootConfiguration
// Only the Boot auto-configuration we use (embedded Tomcat, DataSource, JPA properties). The
// full set would also start e.g. an extra Quartz scheduler, because HAPI puts Quartz, Gson,
// Elasticsearch and more on the classpath; leaving them out saves startup time.
@ImportAutoConfiguration({
	PropertyPlaceholderAutoConfiguration.class,
	ServletWebServerFactoryAutoConfiguration.class,
	EmbeddedWebServerFactoryCustomizerAutoConfiguration.class,
	HttpEncodingAutoConfiguration.class,
	DataSourceAutoConfiguration.class,
	HibernateJpaAutoConfiguration.class
})
@Import({
	StorageConfig.class,
	FhirServerConfig.class,
	JpaR4Config.class,
	HapiJpaConfig.class,
	ThreadPoolFactoryConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	SubscriptionSubmitterConfig.class,
	SubscriptionProcessorConfig.class,
	SubscriptionChannelConfig.class
})
public class FhircareHapiServer {

	public static void main(String[] args) {
		SpringApplication app = new SpringApplication(FhircareHapiServer.class);
		app.setDefaultProperties(DatabaseLocation.defaultProperties());
		app.run(args);
	}
}
