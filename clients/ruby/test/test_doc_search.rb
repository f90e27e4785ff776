# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Search and Querying": both snippets, checked against the
# server's answers.
class TestDocSearch < StorageTest
  # name => [signature, version, method, performance, examples_count, age in days]
  PROGRAMS = {
    f: ["ClassifyText", "0.9.0", "miprov2", 0.96, 150, 20],
    a: ["ClassifyText", "1.0.0", "miprov2", 0.95, 150, 0],
    b: ["ClassifyText", "1.1.0", "simple_optimizer", 0.88, 200, 0],
    c: ["ClassifyText", "1.2.0", "miprov2", 0.80, 150, 0],
    d: ["ClassifyText", "1.3.0", "bootstrap", 0.93, 150, 0],
    e: ["ClassifyText", "1.4.0", "miprov2", 0.97, 50, 0],
    g: ["OtherSignature", "1.0.0", "miprov2", 0.99, 150, 0]
  }.freeze

  def seed(storage)
    PROGRAMS.to_h do |name, (sig, version, method, score, examples, age)|
      [name, store_aged(storage, "Classify the text (#{name}).", age,
                        signature: sig, version: version, optimization_method: method, performance: score,
                        examples_count: examples, description: name == :a ? "sentiment classifier" : "program #{name}")]
    end
  end

  # Snippet 1, "Program Search": the page's class
  #
  #   class ProgramSearch
  #     def initialize(storage)
  #     def search(query)        # criteria from the query; sort by performance desc, limit 20;
  #                              # each result + relevance_score and summary, most relevant first
  #       # "ClassifyText performance > 0.9"
  #       # "version:1.* method:miprov2 created:last_week"
  #       # "high performing sentiment classifiers"
  #     def find_similar_programs(program_id, similarity_threshold: 0.8)
  #
  # Adaptation: "default storage configured once".
  def test_program_search
    configure_default
    storage = DSPy::Storage::ProgramStorage.new
    ids = seed(storage)
    search = DSPy::Storage::ProgramSearch.new(storage)

    query = "version:1.* method:miprov2 created:last_week"
    results = search.search(query)
    raw = server.get("/search?#{q(q: query, project: @project, limit: 20)}")["results"]
    assert_equal raw.map { |r| r["id"] }, results.map { |r| r[:id] }
    assert_equal [ids[:a], ids[:c], ids[:e], ids[:g]].sort, results.map { |r| r[:id] }.sort
    results.zip(raw).each do |mine, theirs|
      assert_equal theirs["relevance_score"], mine[:relevance_score]
      assert_equal theirs["summary"], mine[:summary]
      assert_equal theirs["performance"], mine[:performance]
      assert_time_equal theirs["created_at"], mine[:created_at]
      assert_equal theirs["metadata"]["examples_count"], mine[:metadata][:examples_count]
    end

    # The service's form of the page's first example (operators take no spaces around them).
    results = search.search("ClassifyText performance>0.9")
    raw = server.get("/search?#{q(q: "ClassifyText performance>0.9", project: @project, limit: 20)}")["results"]
    assert_equal raw.map { |r| r["id"] }, results.map { |r| r[:id] }
    assert_equal [ids[:a], ids[:d], ids[:e], ids[:f]].sort, results.map { |r| r[:id] }.sort

    # The page's first example as written: the service's query language has no spaced operators,
    # so the service answers 400 (raised as InvalidRequest with its message and field).
    status, _, body = server.raw(:get, "/search?#{q(q: "ClassifyText performance > 0.9", project: @project)}")
    assert_equal 400, status
    error = assert_raises(DSPy::Storage::InvalidRequest) { search.search("ClassifyText performance > 0.9") }
    assert_equal JSON.parse(body)["error"]["message"], error.message
    assert_equal "q", error.field
    assert_equal 400, error.status

    # The page's natural-language example is free text: every word must begin a word of a program
    # (as the server answers).
    natural = "high performing sentiment classifiers"
    raw = server.get("/search?#{q(q: natural, project: @project)}")["results"]
    assert_equal raw.map { |r| r["id"] }, search.search(natural).map { |r| r[:id] }
    # Free words are ranked by relevance, most relevant first.
    ranked = search.search("sentiment")
    assert_equal [ids[:a]], ranked.map { |r| r[:id] }
    assert_operator ranked.first[:relevance_score], :>, 0

    # limit: nil walks every page.
    all = search.search("signature:ClassifyText", limit: nil)
    assert_equal 6, all.size
    assert_equal 2, search.search("signature:ClassifyText", limit: 2).size

    # find_similar_programs(program_id, similarity_threshold: 0.8)
    similar = search.find_similar_programs(ids[:a], similarity_threshold: 0.8)
    raw = server.get("/programs/#{ids[:a]}/similar?#{q(threshold: 0.8, limit: 10)}")["results"]
    assert_equal raw.map { |r| [r["id"], r["similarity"]] }, similar.map { |r| [r[:id], r[:similarity]] }
    refute_empty similar
    assert(similar.all? { |r| r[:similarity] >= 0.8 })
    assert_equal similar.map { |r| -r[:similarity] }.sort, similar.map { |r| -r[:similarity] }
    refute_includes similar.map { |r| r[:id] }, ids[:a]
  end

  # Snippet 2, "Advanced Querying" (page text, with `1.week.ago` and `30.days` in plain Ruby):
  #
  #   search_results = storage.search({ signature: 'ClassifyText', performance: { gte: 0.85 },
  #     created_at: { gte: 1.week.ago }, optimization_method: ['miprov2', 'simple_optimizer'],
  #     metadata: { examples_count: { gte: 100 } }, sort: [{ performance: :desc }, { created_at: :desc }],
  #     limit: 10 })
  #   performance_stats = storage.aggregate({ signature: 'ClassifyText', group_by: :optimization_method,
  #     metrics: { avg_performance: { avg: :performance }, max_performance: { max: :performance },
  #                count: { count: :id } } })
  #   performance_over_time = storage.time_series({ signature: 'ClassifyText', metric: :performance,
  #     interval: :day, time_range: 30.days })
  #
  # Adaptations: "ActiveSupport replaced by plain Ruby" (`1.week.ago` → `Time.now - 7 * 86400`,
  # `30.days` → `30 * 86400`) and "default storage configured once".
  def test_advanced_querying
    configure_default
    storage = DSPy::Storage::ProgramStorage.new
    ids = seed(storage)
    week_ago = Time.now - 7 * 86_400

    # --- the page ---
    # Complex queries with multiple criteria
    search_results = storage.search({
      signature: 'ClassifyText',
      performance: { gte: 0.85 },
      created_at: { gte: week_ago },
      optimization_method: ['miprov2', 'simple_optimizer'],
      metadata: {
        examples_count: { gte: 100 }
      },
      sort: [
        { performance: :desc },
        { created_at: :desc }
      ],
      limit: 10
    })

    # Aggregation queries
    performance_stats = storage.aggregate({
      signature: 'ClassifyText',
      group_by: :optimization_method,
      metrics: {
        avg_performance: { avg: :performance },
        max_performance: { max: :performance },
        count: { count: :id }
      }
    })

    # Time-series queries
    performance_over_time = storage.time_series({
      signature: 'ClassifyText',
      metric: :performance,
      interval: :day,
      time_range: 30 * 86_400
    })
    # --- end of the page ---

    raw = server.json(:post, "/search", body: {
                        signature: "ClassifyText", performance: { gte: 0.85 }, created_at: { gte: iso(week_ago) },
                        optimization_method: %w[miprov2 simple_optimizer], metadata: { examples_count: { gte: 100 } },
                        sort: [{ performance: "desc" }, { created_at: "desc" }], limit: 10, project: @project
                      })["results"]
    assert_equal raw.map { |r| r["id"] }, search_results.map { |r| r[:id] }
    assert_equal [ids[:a], ids[:b]], search_results.map { |r| r[:id] }, "by hand: A 0.95 then B 0.88"

    raw = server.json(:post, "/aggregate", body: {
                        signature: "ClassifyText", group_by: "optimization_method", project: @project,
                        metrics: { avg_performance: { avg: "performance" }, max_performance: { max: "performance" },
                                   count: { count: "id" } }
                      })["groups"]
    assert_equal raw.map { |g| g.transform_keys(&:to_sym) }, performance_stats
    miprov2 = performance_stats.find { |g| g[:key] == "miprov2" }
    assert_equal 4, miprov2[:count]
    assert_in_delta (0.96 + 0.95 + 0.80 + 0.97) / 4, miprov2[:avg_performance], 1e-9
    assert_equal 0.97, miprov2[:max_performance]
    assert_equal %w[bootstrap miprov2 simple_optimizer], performance_stats.map { |g| g[:key] }

    raw = server.json(:post, "/time-series", body: { signature: "ClassifyText", metric: "performance", interval: "day",
                                                     time_range: "30d", project: @project })["points"]
    assert_equal raw.map { |p| [p["t"], p["value"], p["count"]] },
                 performance_over_time.map { |p| [iso(p[:t]), p[:value], p[:count]] }
    assert_equal 5, performance_over_time.last[:count]
    assert_equal 6, performance_over_time.sum { |p| p[:count] }
    assert_kind_of Time, performance_over_time.first[:t]
  end
end
