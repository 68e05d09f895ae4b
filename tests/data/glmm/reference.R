# Reference fits of the GLMM datasets (make_data.py) by lme4, glmmTMB and ordinal.
# Run once from this folder: Rscript reference.R > reference.csv
# Writes dataset,package,method,quantity,value rows: logLik (with every constant),
# fixed effects, the random intercept's SD, and standard errors from each package's
# Hessian-based vcov.
suppressPackageStartupMessages({library(lme4); library(glmmTMB); library(ordinal)})
out <- function(ds, pkg, method, q, v) cat(sprintf("%s,%s,%s,%s,%.10g\n", ds, pkg, method, q, v))
cat("dataset,package,method,quantity,value\n")

ctrl <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5, rhoend = 1e-10))
for (ds in c("binary", "count")) {
  d <- read.csv(paste0(ds, ".csv"))
  d$ID <- factor(d$ID)
  fam <- if (ds == "binary") binomial(link = "logit") else poisson(link = "log")
  for (n in c(1, 20)) {
    fit <- glmer(DV ~ X + (1 | ID), data = d, family = fam, nAGQ = n, control = ctrl)
    m <- if (n == 1) "laplace" else paste0("agq", n)
    out(ds, "lme4", m, "logLik", as.numeric(logLik(fit)))
    b <- fixef(fit); se <- sqrt(diag(as.matrix(vcov(fit))))
    out(ds, "lme4", m, "intercept", b[1]); out(ds, "lme4", m, "x", b[2])
    out(ds, "lme4", m, "se_intercept", se[1]); out(ds, "lme4", m, "se_x", se[2])
    out(ds, "lme4", m, "sd_id", attr(VarCorr(fit)$ID, "stddev"))
  }
}

d <- read.csv("binomial.csv"); d$ID <- factor(d$ID)
for (n in c(1, 20)) {
  fit <- glmer(cbind(DV, N - DV) ~ X + (1 | ID), data = d, family = binomial(link = "logit"), nAGQ = n,
               control = ctrl)
  m <- if (n == 1) "laplace" else paste0("agq", n)
  out("binomial", "lme4", m, "logLik", as.numeric(logLik(fit)))
  b <- fixef(fit); se <- sqrt(diag(as.matrix(vcov(fit))))
  out("binomial", "lme4", m, "intercept", b[1]); out("binomial", "lme4", m, "x", b[2])
  out("binomial", "lme4", m, "se_intercept", se[1]); out("binomial", "lme4", m, "se_x", se[2])
  out("binomial", "lme4", m, "sd_id", attr(VarCorr(fit)$ID, "stddev"))
}

d <- read.csv("negbin.csv"); d$ID <- factor(d$ID)
fit <- glmmTMB(DV ~ X + (1 | ID), data = d, family = nbinom2,
               control = glmmTMBControl(optCtrl = list(iter.max = 1e4, eval.max = 1e4)))
out("negbin", "glmmTMB", "laplace", "logLik", as.numeric(logLik(fit)))
b <- fixef(fit)$cond; se <- sqrt(diag(vcov(fit)$cond))
out("negbin", "glmmTMB", "laplace", "intercept", b[1]); out("negbin", "glmmTMB", "laplace", "x", b[2])
out("negbin", "glmmTMB", "laplace", "se_intercept", se[1]); out("negbin", "glmmTMB", "laplace", "se_x", se[2])
out("negbin", "glmmTMB", "laplace", "sd_id", attr(VarCorr(fit)$cond$ID, "stddev"))
out("negbin", "glmmTMB", "laplace", "size", sigma(fit))  # nbinom2: Var = mu + mu^2 / size

d <- read.csv("ordinal.csv"); d$ID <- factor(d$ID); d$Y <- factor(d$DV, ordered = TRUE)
for (n in c(1, 20)) {
  fit <- clmm(Y ~ X + (1 | ID), data = d, link = "logit", nAGQ = n,
              control = clmm.control(gradTol = 1e-8, innerCtrl = "noWarn"))
  m <- if (n == 1) "laplace" else paste0("agq", n)
  out("ordinal", "ordinal", m, "logLik", as.numeric(logLik(fit)))
  for (k in seq_along(fit$alpha)) out("ordinal", "ordinal", m, paste0("cut", k - 1), fit$alpha[k])
  out("ordinal", "ordinal", m, "x", fit$beta[1])
  out("ordinal", "ordinal", m, "sd_id", fit$ST$ID[1, 1])
  se <- sqrt(diag(vcov(fit)))
  out("ordinal", "ordinal", m, "se_x", se["X"])
}
cat(sprintf("# %s; lme4 %s, glmmTMB %s, ordinal %s, Matrix %s\n", R.version.string, packageVersion("lme4"),
            packageVersion("glmmTMB"), packageVersion("ordinal"), packageVersion("Matrix")))
