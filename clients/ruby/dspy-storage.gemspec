# frozen_string_literal: true

require_relative "lib/dspy_storage/version"

Gem::Specification.new do |spec|
  spec.name = "dspy-storage"
  spec.version = DSPyStorage::VERSION
  spec.summary = "DSPy.rb's storage classes (ProgramStorage, VersionedProgramStorage, ...) over the dspy-storage API"
  spec.description = <<~TEXT
    A thin, verifying, caching client of the dspy-storage HTTP API (a local `dspy-storage serve` or
    the AWS Lambda stack) with the class names of DSPy.rb's "Storage System" documentation: every
    program is checked against its SHA-256, immutable versions are cached in memory and on disk, and
    aliases keep answering (stale) when the service is down. Standard library only; SigV4 through
    aws-sigv4 when present.
  TEXT
  spec.authors = ["dspy-storage"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"
  spec.files = Dir["lib/**/*.rb"] + ["README.md", "dspy-storage.gemspec"]
  spec.require_paths = ["lib"]
  spec.metadata = { "rubygems_mfa_required" => "true" }
  # Optional: aws-sigv4 (for aws_iam: true). Not a hard dependency: the client runs on the
  # standard library alone.
end
