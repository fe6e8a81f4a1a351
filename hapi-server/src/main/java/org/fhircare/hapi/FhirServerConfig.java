package org.fhircare.hapi;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.SubscriptionTriggeringProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.server.ETagSupportEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * The FHIR REST layer: one HAPI RestfulServer servlet mounted at /fhir/*, wired as the
 * official image wires it for what a client can observe (paging sizes, ETags, pretty JSON,
 * Bulk Data export only when enabled). HAPI's answers are not rewritten: a stale If-Match
 * is HAPI's 409, as users of the image get it.
 */
@Configuration
public class FhirServerConfig {

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviders,
			IJpaSystemProvider systemProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider,
			SubscriptionTriggeringProvider subscriptionTriggeringProvider,
			ValueSetOperationProvider valueSetOperationProvider,
			BulkDataExportProvider bulkDataExportProvider,
			HapiFhirProperties props) {
		RestfulServer server = new RestfulServer(systemDao.getContext());
		// One provider per resource type (CRUD, search, _history, $validate, ...).
		server.registerProviders(resourceProviders.createProviders());
		// System level: transaction and batch Bundles, server _history, $expunge ...
		server.registerProvider(systemProvider);
		server.registerProvider(subscriptionTriggeringProvider);
		server.registerProvider(valueSetOperationProvider);
		if (props.isBulkExportEnabled()) {
			// $export at system, Patient and Group level, with $export-poll-status.
			server.registerProvider(bulkDataExportProvider);
		}

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("fhircare HAPI FHIR R4 server");
		server.setServerConformanceProvider(capabilities);

		// Search results are paged through the database, so next links stay valid.
		pagingProvider.setDefaultPageSize(props.getDefaultPageSize());
		pagingProvider.setMaximumPageSize(props.getMaxPageSize());
		server.setPagingProvider(pagingProvider);
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		server.setDefaultPrettyPrint(props.isDefaultPrettyPrint());
		if (!props.isEtagSupportEnabled()) {
			server.setETagSupport(ETagSupportEnum.DISABLED);
		}
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer restfulServer) {
		ServletRegistrationBean<RestfulServer> registration =
				new ServletRegistrationBean<>(restfulServer, "/fhir/*");
		registration.setName("fhir");
		registration.setLoadOnStartup(1);
		return registration;
	}
}
