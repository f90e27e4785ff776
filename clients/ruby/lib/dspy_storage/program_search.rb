# frozen_string_literal: true

module DSPyStorage
  # DSPy.rb's documented ProgramSearch: the service's query language and similarity.
  class ProgramSearch
    attr_reader :storage

    def initialize(storage = DSPyStorage.current)
      @storage = storage
    end

    # Searches with a query-language String (`"version:1.* method:miprov2 created:last_week"`,
    # `"ClassifyText performance>0.9"`, free words) or a structured Hash; at most +limit+ results
    # (default 20, `limit: nil` for every match), most relevant first (the service's order among
    # equals). Each result carries relevance_score and summary.
    def search(query, limit: 20, sort: nil)
      results = if limit
                  @storage.search(query, limit: limit, sort: sort)
                else
                  @storage.search_each(query, sort: sort).to_a
                end
      results.each_with_index.sort_by { |r, i| [-r[:relevance_score].to_f, i] }.map(&:first)
    end

    # Programs whose similarity to +program_id+ (signature, performance, parameters and
    # instructions, computed by the service) is at least +similarity_threshold+, most similar first.
    def find_similar_programs(program_id, similarity_threshold: 0.8, limit: 10)
      @storage.similar(program_id, threshold: similarity_threshold, limit: limit)
    end
  end
end
