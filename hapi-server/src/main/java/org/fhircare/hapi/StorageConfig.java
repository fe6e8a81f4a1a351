package org.fhircare.hapi;

import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.ClientIdStrategyEnum;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.IdStrategyEnum;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import jakarta.persistence.EntityManagerFactory;
import java.util.HashSet;
import java.util.Map;
import javax.sql.DataSource;
import org.hl7.fhir.dstu2.model.Subscription.SubscriptionChannelType;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.autoconfigure.orm.jpa.JpaProperties;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.core.env.Environment;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * Storage behaviour and subscription settings from {@link HapiFhirProperties} (the official
 * image's defaults unless a profile or a command-line setting changes them), and the
 * Hibernate wiring for the HAPI JPA server.
 */
@Configuration
@EnableConfigurationProperties(HapiFhirProperties.class)
public class StorageConfig {

	@Bean
	public JpaStorageSettings jpaStorageSettings(HapiFhirProperties props) {
		JpaStorageSettings settings = new JpaStorageSettings();
		settings.setReuseCachedSearchResultsForMillis(props.getReuseCachedSearchResultsMillis());
		settings.setExpireSearchResultsAfterMillis(props.getRetainCachedSearchesMins() * 60 * 1000);
		settings.setResourceClientIdStrategy(props.getClientIdStrategy());
		IdStrategyEnum serverIds = props.getServerIdStrategy();
		if (serverIds == null && props.getClientIdStrategy() == ClientIdStrategyEnum.ANY) {
			serverIds = IdStrategyEnum.UUID; // as the image does: server ids never clash with client ids
		}
		if (serverIds != null) {
			settings.setResourceServerIdStrategy(serverIds);
		}
		settings.setAllowMultipleDelete(props.isAllowMultipleDelete());
		settings.setAllowExternalReferences(props.isAllowExternalReferences());
		settings.setAllowContainsSearches(props.isAllowContainsSearches());
		settings.setAutoCreatePlaceholderReferenceTargets(props.isAutoCreatePlaceholderReferenceTargets());
		settings.setEnforceReferentialIntegrityOnWrite(props.isEnforceReferentialIntegrityOnWrite());
		settings.setEnforceReferentialIntegrityOnDelete(props.isEnforceReferentialIntegrityOnDelete());
		settings.setDeleteExpungeEnabled(props.isDeleteExpungeEnabled());
		settings.setExpungeEnabled(props.isExpungeEnabled());
		settings.setFilterParameterEnabled(props.isFilterSearchEnabled());
		settings.setFetchSizeDefaultMaximum(props.getMaxPageSize());
		if (!props.getSearchPrefetchThresholds().isEmpty()) {
			settings.setSearchPreFetchThresholds(props.getSearchPrefetchThresholds());
		}
		settings.setTreatReferencesAsLogical(new HashSet<>(props.getLogicalUrls()));
		settings.setStoreMetaSourceInformation(props.getStoreMetaSourceInformation());
		settings.setJobFastTrackingEnabled(props.isJobFastTrackingEnabled());
		// No Lucene/Elasticsearch indexing (the image's default too).
		settings.setHibernateSearchIndexFullText(false);
		settings.setHibernateSearchIndexSearchParams(false);
		return settings;
	}

	@Bean
	public SubscriptionSettings subscriptionSettings(HapiFhirProperties props) {
		SubscriptionSettings settings = new SubscriptionSettings();
		HapiFhirProperties.Subscription sub = props.getSubscription();
		if (sub.isResthookEnabled()) {
			settings.addSupportedSubscriptionType(SubscriptionChannelType.RESTHOOK);
		}
		if (sub.getPollingIntervalMs() != null) {
			settings.setSubscriptionIntervalInMs(sub.getPollingIntervalMs());
		}
		if (sub.isImmediatelyQueued()) {
			settings.setSubscriptionChangeQueuedImmediately(true);
		}
		return settings;
	}

	/**
	 * The batch2 maintenance pass (which moves a job such as $export from one step to the
	 * next) every {@code hapi.fhir.batch2_maintenance_interval_millis}; set before HAPI's
	 * scheduler registers the pass at start.
	 */
	@Bean
	public static BeanPostProcessor batch2MaintenanceInterval(Environment env) {
		long millis = env.getProperty(
				"hapi.fhir.batch2_maintenance_interval_millis", Long.class, 60_000L);
		return new BeanPostProcessor() {
			@Override
			public Object postProcessBeforeInitialization(Object bean, String name) {
				if (bean instanceof JobMaintenanceServiceImpl maintenance) {
					maintenance.setScheduledJobFrequencyMillis(millis);
				}
				return bean;
			}
		};
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	/** No email subscriptions; HAPI still wants an email sender bean. */
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
