package org.fhircare.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.Constants;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import ca.uhn.fhir.rest.server.exceptions.PreconditionFailedException;
import ca.uhn.fhir.rest.server.exceptions.ResourceVersionConflictException;

/**
 * FHIR says a write whose If-Match names a version that is no longer current fails with
 * 412 Precondition Failed. HAPI reports that case as a 409 version conflict; this interceptor
 * turns it into a 412 when the request carried an If-Match header. Conflicts without
 * If-Match (e.g. two concurrent writers) stay 409.
 */
@Interceptor
public class IfMatchPreconditionInterceptor {

	@Hook(Pointcut.SERVER_PRE_PROCESS_OUTGOING_EXCEPTION)
	public BaseServerResponseException staleIfMatchIs412(RequestDetails request, Throwable error) {
		if (error instanceof ResourceVersionConflictException conflict
				&& request != null
				&& request.getHeader(Constants.HEADER_IF_MATCH) != null) {
			return new PreconditionFailedException(conflict.getMessage(), conflict.getOperationOutcome());
		}
		return null;
	}
}
