package org.fhircare.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.ClientIdStrategyEnum;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.IdStrategyEnum;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import jakarta.persistence.EntityManagerFactory;
import java.util.Map;
import javax.sql.DataSource;
import org.hl7.fhir.dstu2.model.Subscription.SubscriptionChannelType;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.autoconfigure.orm.jpa.JpaProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/** Storage behaviour, subscription settings and the Hibernate wiring for the HAPI JPA server. */
@Configuration
public class StorageConfig {

	@Bean
	public JpaStorageSettings jpaStorageSettings() {
		JpaStorageSettings settings = new JpaStorageSettings();
		// Clients may choose any id (PUT Patient/abc); server-assigned ids are UUIDs so they never clash.
		settings.setResourceClientIdStrategy(ClientIdStrategyEnum.ANY);
		settings.setResourceServerIdStrategy(IdStrategyEnum.UUID);
		settings.setAllowMultipleDelete(true);
		// Never answer a search from an earlier cached one: tests see their own writes at once.
		settings.setReuseCachedSearchResultsForMillis(null);
		settings.setEnforceReferentialIntegrityOnWrite(true);
		settings.setEnforceReferentialIntegrityOnDelete(true);
		settings.setDeleteExpungeEnabled(true);
		settings.setExpungeEnabled(true);
		// No Lucene/Elasticsearch indexing.
		settings.setHibernateSearchIndexFullText(false);
		settings.setHibernateSearchIndexSearchParams(false);
		return settings;
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		SubscriptionSettings settings = new SubscriptionSettings();
		settings.addSupportedSubscriptionType(SubscriptionChannelType.RESTHOOK);
		settings.setEnableInMemorySubscriptionMatching(true);
		// Shorten the delay between POSTing a Subscription and it becoming active.
		settings.setSubscriptionChangeQueuedImmediately(true);
		settings.setSubscriptionIntervalInMs(1000);
		// Allow rest-hook endpoints on loopback and any port.
		settings.setRestHookEndpointUrlValidationRegex(null);
		return settings;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	/** Only rest-hook subscriptions are enabled; HAPI still wants an email sender bean. */
	@Bean
	public IEmailSender emailSender() {
		return details -> {};
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			JpaProperties jpaProperties,
			DataSource dataSource) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		Map<String, String> props = jpaProperties.getProperties();
		props.putIfAbsent("hibernate.dialect", "ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect");
		props.putIfAbsent("hibernate.hbm2ddl.auto", "update");
		props.putIfAbsent("hibernate.search.enabled", "false");
		props.putIfAbsent("hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner");
		factory.setPersistenceUnitName("HAPI_PU");
		factory.setJpaPropertyMap(props);
		factory.setDataSource(dataSource);
		return factory;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}
}
