package org.fhircare.hapi;

import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.ClientIdStrategyEnum;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.IdStrategyEnum;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings.StoreMetaSourceInformationEnum;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import org.springframework.boot.context.properties.ConfigurationProperties;

/**
 * The server settings that change what a FHIR client sees, under the same keys as the
 * official {@code hapiproject/hapi} image ({@code hapi.fhir.*}, e.g.
 * {@code --hapi.fhir.subscription.resthook_enabled=true}). The defaults here and in
 * {@code application.yaml} are that image's defaults (starter tag {@code image/v8.8.0-1}),
 * so a plain start behaves like the image as users run it; {@code application-recommended.yaml}
 * holds what fhircare's README recommends.
 */
@ConfigurationProperties(prefix = "hapi.fhir")
public class HapiFhirProperties {

	/** Searches repeated within this many ms are answered from the first one's results. */
	private Long reuseCachedSearchResultsMillis = 60_000L;
	private long retainCachedSearchesMins = 60;
	/** ALPHANUMERIC: a client may not create a resource whose id is only digits (HAPI-0960). */
	private ClientIdStrategyEnum clientIdStrategy = ClientIdStrategyEnum.ALPHANUMERIC;
	/** Unset: SEQUENTIAL_NUMERIC, or UUID when client ids are ANY (as the image does). */
	private IdStrategyEnum serverIdStrategy;
	private boolean allowMultipleDelete = false;
	private boolean allowExternalReferences = false;
	private boolean allowContainsSearches = true;
	private boolean autoCreatePlaceholderReferenceTargets = false;
	private boolean enforceReferentialIntegrityOnWrite = true;
	private boolean enforceReferentialIntegrityOnDelete = true;
	private boolean deleteExpungeEnabled = false;
	private boolean expungeEnabled = true;
	private boolean filterSearchEnabled = true;
	private boolean etagSupportEnabled = true;
	private boolean defaultPrettyPrint = true;
	private boolean bulkExportEnabled = false;
	/** Batch2 jobs (bulk export) start their next step as soon as one ends, not at the next
	 * maintenance pass. Off in the image. */
	private boolean jobFastTrackingEnabled = false;
	private int defaultPageSize = 20;
	private int maxPageSize = Integer.MAX_VALUE;
	private List<Integer> searchPrefetchThresholds = new ArrayList<>();
	private Set<String> logicalUrls = new LinkedHashSet<>();
	private StoreMetaSourceInformationEnum storeMetaSourceInformation = StoreMetaSourceInformationEnum.NONE;
	private final Subscription subscription = new Subscription();

	/** {@code hapi.fhir.subscription.*}: every channel type is off unless enabled. */
	public static class Subscription {
		private boolean resthookEnabled = false;
		private Long pollingIntervalMs;
		private boolean immediatelyQueued = false;

		public boolean isResthookEnabled() {
			return resthookEnabled;
		}

		public void setResthookEnabled(boolean resthookEnabled) {
			this.resthookEnabled = resthookEnabled;
		}

		public Long getPollingIntervalMs() {
			return pollingIntervalMs;
		}

		public void setPollingIntervalMs(Long pollingIntervalMs) {
			this.pollingIntervalMs = pollingIntervalMs;
		}

		public boolean isImmediatelyQueued() {
			return immediatelyQueued;
		}

		public void setImmediatelyQueued(boolean immediatelyQueued) {
			this.immediatelyQueued = immediatelyQueued;
		}
	}

	public Long getReuseCachedSearchResultsMillis() {
		return reuseCachedSearchResultsMillis;
	}

	public void setReuseCachedSearchResultsMillis(Long value) {
		this.reuseCachedSearchResultsMillis = value;
	}

	public long getRetainCachedSearchesMins() {
		return retainCachedSearchesMins;
	}

	public void setRetainCachedSearchesMins(long value) {
		this.retainCachedSearchesMins = value;
	}

	public ClientIdStrategyEnum getClientIdStrategy() {
		return clientIdStrategy;
	}

	public void setClientIdStrategy(ClientIdStrategyEnum value) {
		this.clientIdStrategy = value;
	}

	public IdStrategyEnum getServerIdStrategy() {
		return serverIdStrategy;
	}

	public void setServerIdStrategy(IdStrategyEnum value) {
		this.serverIdStrategy = value;
	}

	public boolean isAllowMultipleDelete() {
		return allowMultipleDelete;
	}

	public void setAllowMultipleDelete(boolean value) {
		this.allowMultipleDelete = value;
	}

	public boolean isAllowExternalReferences() {
		return allowExternalReferences;
	}

	public void setAllowExternalReferences(boolean value) {
		this.allowExternalReferences = value;
	}

	public boolean isAllowContainsSearches() {
		return allowContainsSearches;
	}

	public void setAllowContainsSearches(boolean value) {
		this.allowContainsSearches = value;
	}

	public boolean isAutoCreatePlaceholderReferenceTargets() {
		return autoCreatePlaceholderReferenceTargets;
	}

	public void setAutoCreatePlaceholderReferenceTargets(boolean value) {
		this.autoCreatePlaceholderReferenceTargets = value;
	}

	public boolean isEnforceReferentialIntegrityOnWrite() {
		return enforceReferentialIntegrityOnWrite;
	}

	public void setEnforceReferentialIntegrityOnWrite(boolean value) {
		this.enforceReferentialIntegrityOnWrite = value;
	}

	public boolean isEnforceReferentialIntegrityOnDelete() {
		return enforceReferentialIntegrityOnDelete;
	}

	public void setEnforceReferentialIntegrityOnDelete(boolean value) {
		this.enforceReferentialIntegrityOnDelete = value;
	}

	public boolean isDeleteExpungeEnabled() {
		return deleteExpungeEnabled;
	}

	public void setDeleteExpungeEnabled(boolean value) {
		this.deleteExpungeEnabled = value;
	}

	public boolean isExpungeEnabled() {
		return expungeEnabled;
	}

	public void setExpungeEnabled(boolean value) {
		this.expungeEnabled = value;
	}

	public boolean isFilterSearchEnabled() {
		return filterSearchEnabled;
	}

	public void setFilterSearchEnabled(boolean value) {
		this.filterSearchEnabled = value;
	}

	public boolean isEtagSupportEnabled() {
		return etagSupportEnabled;
	}

	public void setEtagSupportEnabled(boolean value) {
		this.etagSupportEnabled = value;
	}

	public boolean isDefaultPrettyPrint() {
		return defaultPrettyPrint;
	}

	public void setDefaultPrettyPrint(boolean value) {
		this.defaultPrettyPrint = value;
	}

	public boolean isBulkExportEnabled() {
		return bulkExportEnabled;
	}

	public void setBulkExportEnabled(boolean value) {
		this.bulkExportEnabled = value;
	}

	public boolean isJobFastTrackingEnabled() {
		return jobFastTrackingEnabled;
	}

	public void setJobFastTrackingEnabled(boolean value) {
		this.jobFastTrackingEnabled = value;
	}

	public int getDefaultPageSize() {
		return defaultPageSize;
	}

	public void setDefaultPageSize(int value) {
		this.defaultPageSize = value;
	}

	public int getMaxPageSize() {
		return maxPageSize;
	}

	public void setMaxPageSize(int value) {
		this.maxPageSize = value;
	}

	public List<Integer> getSearchPrefetchThresholds() {
		return searchPrefetchThresholds;
	}

	public void setSearchPrefetchThresholds(List<Integer> value) {
		this.searchPrefetchThresholds = value;
	}

	public Set<String> getLogicalUrls() {
		return logicalUrls;
	}

	public void setLogicalUrls(Set<String> value) {
		this.logicalUrls = value;
	}

	public StoreMetaSourceInformationEnum getStoreMetaSourceInformation() {
		return storeMetaSourceInformation;
	}

	public void setStoreMetaSourceInformation(StoreMetaSourceInformationEnum value) {
		this.storeMetaSourceInformation = value;
	}

	public Subscription getSubscription() {
		return subscription;
	}
}
